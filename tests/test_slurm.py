"""The sbatch scripts build the right `srun torchrun ...` command (run with bash and a fake Slurm).

Fake `srun` and `scontrol` executables go first on PATH: srun records its argv (NUL-separated)
and never starts torchrun; scontrol prints fake host names and records `requeue` requests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import autoencoder_train

SLURM_DIR = Path(__file__).resolve().parents[1] / "slurm"
ONE_NODE = SLURM_DIR / "train_1node.sbatch"
MULTI_NODE = SLURM_DIR / "train_multinode.sbatch"
EXTRA = ["--model", "LRAE_VC", "--drop-mode", "random", "--note", "two words", "--epochs", "3"]

FAKE_SRUN = """#!/bin/bash
printf '%s\\0' "$@" > "$FAKE_SLURM_LOG/srun.argv"
if [[ -n "${FAKE_SRUN_HOLD:-}" ]]; then  # stay "running" until the test creates this file
    for _ in $(seq 600); do [[ -e "$FAKE_SRUN_HOLD" ]] && break; sleep 0.05; done
fi
exit "${FAKE_SRUN_EXIT:-0}"
"""
FAKE_SCONTROL = """#!/bin/bash
echo "$*" >> "$FAKE_SLURM_LOG/scontrol.log"
if [[ "$1 $2" == "show hostnames" ]]; then
    [[ -n "${FAKE_HOSTS:-}" ]] || exit 1
    printf '%s\\n' $FAKE_HOSTS
fi
"""


@pytest.fixture
def slurm(tmp_path):
    """A fake Slurm on PATH, a fake repository with both training scripts, and a data folder."""
    bin_dir, log_dir, repo, data = (tmp_path / n for n in ("bin", "log", "repo", "data"))
    for d in (bin_dir, log_dir, repo, data):
        d.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for name in ("autoencoder_train.py", "autoencoder_train_vid_sequence.py"):
        (repo / name).write_text("raise SystemExit('not run in these tests')\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SRUN_", "LRAE_")) and k not in ("SCRIPT", "VIRTUAL_ENV")}
    env.update({
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        "FAKE_SLURM_LOG": str(log_dir),
        "FAKE_HOSTS": "gpu-node-07 gpu-node-08",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "lrae-exp",
        "SLURM_JOB_NODELIST": "gpu-node-[07-08]",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_GPUS_ON_NODE": "4",
        "SLURM_SUBMIT_DIR": str(repo),
        "LRAE_DATA": str(data),
        "LRAE_RUNS": str(tmp_path / "runs"),
    })
    return {"env": env, "log": log_dir, "repo": repo, "data": data, "runs": tmp_path / "runs"}


def run(script: Path, slurm: dict, *args: str, **env: str | None) -> subprocess.CompletedProcess:
    full_env = dict(slurm["env"])
    for k, v in env.items():
        if v is None:
            full_env.pop(k, None)
        else:
            full_env[k] = v
    return subprocess.run(["bash", str(script), *args], env=full_env, cwd=slurm["repo"],
                          capture_output=True, text=True, timeout=60)


def srun_argv(slurm: dict) -> tuple[list[str], list[str], str, list[str]]:
    """Split the recorded command into (srun options, torchrun options, script, script args)."""
    argv = (slurm["log"] / "srun.argv").read_text().split("\0")[:-1]
    i = argv.index("torchrun")
    j = next(k for k in range(i + 1, len(argv)) if argv[k].endswith(".py"))
    return argv[:i], argv[i + 1:j], argv[j], argv[j + 1:]


def test_scripts_parse():
    for script in (ONE_NODE, MULTI_NODE):
        subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_scripts_shellcheck_clean():
    subprocess.run(["shellcheck", str(ONE_NODE), str(MULTI_NODE)], check=True)


def test_multinode_command(slurm):
    r = run(MULTI_NODE, slurm, *EXTRA, LRAE_RDZV_PORT="29999")
    assert r.returncode == 0, r.stderr
    srun_opts, torchrun_opts, script, script_args = srun_argv(slurm)
    assert "--nodes=2" in srun_opts and "--ntasks-per-node=1" in srun_opts
    assert torchrun_opts == ["--nnodes=2", "--nproc_per_node=4", "--rdzv_backend=c10d",
                             "--rdzv_endpoint=gpu-node-07:29999", "--rdzv_id=4242"]
    assert script == str(slurm["repo"] / "autoencoder_train.py")
    out_dir = slurm["runs"] / "lrae-exp"
    assert script_args == ["--out-dir", str(out_dir), "--resume-or-start", "--data", str(slurm["data"]), *EXTRA]
    assert out_dir.is_dir()
    assert "show hostnames gpu-node-[07-08]" in (slurm["log"] / "scontrol.log").read_text()


def test_multinode_defaults_and_typed_gpus(slurm):
    """Port defaults from the job id; "a100:8" GPUs per node; the sequence script; no data path."""
    r = run(MULTI_NODE, slurm, "--model", "conv_lstm_ae", SLURM_GPUS_ON_NODE=None,
            SLURM_GPUS_PER_NODE="a100:8", SCRIPT="autoencoder_train_vid_sequence.py", LRAE_DATA=None,
            SLURM_JOB_NUM_NODES=None, SLURM_NNODES=None, LRAE_RUNS=None)
    assert r.returncode == 0, r.stderr
    _, torchrun_opts, script, script_args = srun_argv(slurm)
    assert "--nnodes=2" in torchrun_opts and "--nproc_per_node=8" in torchrun_opts
    assert f"--rdzv_endpoint=gpu-node-07:{29500 + 4242 % 1000}" in torchrun_opts
    assert script == str(slurm["repo"] / "autoencoder_train_vid_sequence.py")
    assert script_args == ["--out-dir", str(slurm["repo"] / "runs" / "lrae-exp"), "--resume-or-start",
                           "--model", "conv_lstm_ae"]


def test_one_node_command(slurm):
    r = run(ONE_NODE, slurm, *EXTRA, SLURM_JOB_NODELIST="gpu-node-07", SLURM_NNODES="1",
            SLURM_JOB_NUM_NODES="1", LRAE_RUN_NAME="my-run")
    assert r.returncode == 0, r.stderr
    srun_opts, torchrun_opts, script, script_args = srun_argv(slurm)
    assert "--ntasks=1" in srun_opts
    assert torchrun_opts == ["--standalone", "--nnodes=1", "--nproc_per_node=4"]
    assert script == str(slurm["repo"] / "autoencoder_train.py")
    out_dir = slurm["runs"] / "my-run"
    assert script_args == ["--out-dir", str(out_dir), "--resume-or-start", "--data", str(slurm["data"]), *EXTRA]


def test_one_node_gpu_fallback_variable(slurm):
    r = run(ONE_NODE, slurm, SLURM_GPUS_ON_NODE=None, SLURM_NNODES=None, SLURM_JOB_NUM_NODES=None,
            LRAE_GPUS_PER_NODE="2")
    assert r.returncode == 0, r.stderr
    _, torchrun_opts, _, script_args = srun_argv(slurm)
    assert "--nproc_per_node=2" in torchrun_opts
    assert script_args == ["--out-dir", str(slurm["runs"] / "lrae-exp"), "--resume-or-start",
                           "--data", str(slurm["data"])]


def test_training_scripts_accept_what_the_job_passes(slurm):
    """The real scripts parse the job's arguments, and a first start may begin the run (no --resume)."""
    r = run(ONE_NODE, slurm, "--model", "LRAE_VC", SLURM_NNODES="1", SLURM_JOB_NUM_NODES="1")
    assert r.returncode == 0, r.stderr
    args = autoencoder_train.parse_args(srun_argv(slurm)[3])
    assert args.resume_or_start and not args.resume and args.out_dir == str(slurm["runs"] / "lrae-exp")


@pytest.mark.parametrize("script, env, words", [
    (MULTI_NODE, {"SLURM_JOB_NODELIST": None}, "SLURM_JOB_NODELIST"),
    (MULTI_NODE, {"FAKE_HOSTS": None}, "node list"),
    (MULTI_NODE, {"SLURM_GPUS_ON_NODE": "0"}, "GPU count"),
    (ONE_NODE, {"SLURM_JOB_ID": None}, "sbatch"),
    (ONE_NODE, {}, "train_multinode"),  # the fixture's job has 2 nodes
    (ONE_NODE, {"SLURM_NNODES": "1", "SLURM_JOB_NUM_NODES": "1", "SCRIPT": "nope.py"}, "nope.py"),
    (ONE_NODE, {"SLURM_NNODES": "1", "SLURM_JOB_NUM_NODES": "1", "LRAE_DATA": "/no/such/data"}, "LRAE_DATA"),
])
def test_bad_setup_fails_clearly(slurm, script, env, words):
    r = run(script, slurm, "--model", "LRAE_VC", **env)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and words in errors[0], r.stderr
    assert not (slurm["log"] / "srun.argv").exists()


def test_exit_status_of_srun_is_passed_on(slurm):
    r = run(MULTI_NODE, slurm, FAKE_SRUN_EXIT="3")
    assert r.returncode == 3


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_usr1_requeues_the_job(slurm, tmp_path):
    """Slurm's `--signal=B:USR1@120` warning makes the script ask for a requeue, then wait for srun."""
    release = tmp_path / "release"
    env = dict(slurm["env"], FAKE_SRUN_HOLD=str(release))
    proc = subprocess.Popen(["bash", str(MULTI_NODE)], env=env, cwd=slurm["repo"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for((slurm["log"] / "srun.argv").exists)
        proc.send_signal(signal.SIGUSR1)
        log = slurm["log"] / "scontrol.log"
        wait_for(lambda: "requeue 4242" in log.read_text())
        assert proc.poll() is None  # still waiting for srun
        release.touch()
        assert proc.wait(timeout=30) == 0
    finally:
        release.touch()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
