"""autoencoder_train.py end to end: tiny runs through main([...]), DDP equality, kill-and-resume, errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import autoencoder_train
from models import load_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data", "synthetic", "--size", "64", "--batch-size", "4", "--amp", "none", "--val-frames", "8"]


def run(tmp_path, *extra, name="run"):
    out = tmp_path / name
    autoencoder_train.main(["--out-dir", str(out), *TINY, *extra])
    return out


@pytest.mark.parametrize("model", ["PNC", "PNC16", "PNC32", "LRAE_VC", "PNC_with_classification"])
def test_two_step_run_of_each_model(tmp_path, model):
    size = ["--size", "56"] if model.startswith("PNC") else []  # PNC needs multiples of 7
    out = run(tmp_path, "--model", model, "--max-steps", "2", *size)
    mode = "random"
    final = out / f"{model}_final_w_{mode}_drops.pth"
    assert final.is_file()
    ckpt = torch.load(final, weights_only=True)
    assert ckpt["model"] == model
    load_model(final)
    for name in ("args.json", "split.json", "metrics.jsonl", "last.pth", "best.pth", "sweep.json", "sweep.png",
                 "loss_curve.png", "reconstructions.png"):
        assert (out / name).is_file(), name
    sweep = json.loads((out / "sweep.json").read_text())
    channels = sweep["channels"]
    assert [r["received"] for r in sweep["results"]["tail"]] == list(range(1, channels + 1))
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train"]) & (set(split["val"]) | set(split["test"]))


def test_head_models_default_to_the_shipped_recipe():
    head = vars(autoencoder_train.parse_args(["--model=PNC_with_classification"]))
    assert {k: head[k] for k in autoencoder_train.HEAD_DEFAULTS} == autoencoder_train.HEAD_DEFAULTS
    assert autoencoder_train.parse_args(["--model=PNC_with_classification", "--size", "224"]).size == 224
    plain = vars(autoencoder_train.parse_args(["--model=PNC"]))
    assert (plain["data"], plain["size"], plain["cls_weight"], plain["curriculum"]) == (None, 224, 0.05, 0.0)


def test_seed_names_follow_drop_mode(tmp_path):
    out = run(tmp_path, "--model", "LRAE_VC", "--max-steps", "1", "--drop-mode", "tail")
    assert (out / "LRAE_VC_final_w_taildrops.pth").is_file()
    out = run(tmp_path, "--model", "LRAE_VC", "--max-steps", "1", "--drop-mode", "none", name="b")
    assert (out / "LRAE_VC_final_no_dropouts.pth").is_file()


def test_resume_without_a_checkpoint_is_refused_unless_asked_to_start(tmp_path, monkeypatch):
    """--resume with no last.pth (a typo in --out-dir, a first Slurm start) must not quietly train from
    scratch and rewrite args.json; --resume-or-start starts the run there, and then continues it."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "typo"
    with pytest.raises(SystemExit, match="has no last.pth to continue; pass --resume-or-start"):
        run(tmp_path, "--model", "LRAE_VC", "--max-steps", "1", "--resume", name="typo")
    with pytest.raises(SystemExit, match="no last.pth"):  # no earlier LRAE_VC-random run under runs/
        autoencoder_train.main(["--model", "LRAE_VC", *TINY, "--max-steps", "1", "--resume"])
    assert not out.exists() and not (tmp_path / "runs").exists()
    run(tmp_path, "--model", "LRAE_VC", "--max-steps", "1", "--resume-or-start", name="typo")
    run(tmp_path, "--model", "LRAE_VC", "--max-steps", "2", "--resume-or-start", name="typo")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train_loss" in r] == [1, 2]


def test_engine_imports_neither_models_nor_data():
    code = ("import sys, training.engine, training.args; "
            "print(sorted(m for m in ('models', 'data') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_weights(a, b, atol=1e-5):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=atol, rtol=1e-4), k


def script(*args):
    return [sys.executable, str(ROOT / "autoencoder_train.py"), "--model", "LRAE_VC", *TINY,
            "--drop-mode", "random", *args]


def test_ddp_two_processes_equal_one_process(tmp_path):
    single = run(tmp_path, "--model", "LRAE_VC", "--max-steps", "4", "--drop-mode", "random", name="one")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "autoencoder_train.py"), "--model", "LRAE_VC", *TINY, "--drop-mode", "random",
           "--max-steps", "4", "--out-dir", str(tmp_path / "two")]
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True, timeout=600)
    name = "LRAE_VC_final_w_random_drops.pth"
    # Gradients differ only by float summation order; Adam normalises each update to ~lr, so a
    # weight whose gradient is ~0 can move by a fraction of lr differently. lr <= 2e-4 in these
    # 4 warm-up steps (5e-4 of total movement); 1e-4 still catches any real divergence.
    assert_same_weights(single / name, tmp_path / "two" / name, atol=1e-4)
    # and the comparison can fail: a different seed gives different weights
    other = run(tmp_path, "--model", "LRAE_VC", "--max-steps", "4", "--seed", "1", name="other")
    with pytest.raises(AssertionError):
        assert_same_weights(single / name, other / name)


def test_sigkill_and_resume_equals_uninterrupted(tmp_path):
    steps = ["--max-steps", "12", "--ckpt-every", "1", "--epochs", "50"]
    full = tmp_path / "full"
    subprocess.run(script(*steps, "--out-dir", str(full)), check=True, cwd=ROOT, capture_output=True, timeout=600)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(script(*steps, "--out-dir", str(killed)), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            last = killed / "last.pth"
            if last.is_file() and torch.load(last, weights_only=True)["step"] >= 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    name = "LRAE_VC_final_w_random_drops.pth"
    assert not (killed / name).exists(), "the run finished before it could be killed"
    subprocess.run(script(*steps, "--out-dir", str(killed), "--resume"), check=True, cwd=ROOT,
                   capture_output=True, timeout=600)
    assert_same_weights(full / name, killed / name, atol=0)


def error_of(*args, cwd=ROOT):
    p = subprocess.run([sys.executable, str(ROOT / "autoencoder_train.py"), *args], cwd=cwd,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    return p.stderr.strip().splitlines()[-1]


def test_error_paths(tmp_path):
    assert "invalid choice" in error_of("--model", "NOPE")
    assert "error:" in error_of("--model", "LRAE_VC", "--data", str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "error:" in error_of("--model", "LRAE_VC", "--data", str(empty))
    one = tmp_path / "one"
    one.mkdir()
    Image.fromarray(np.zeros((80, 80, 3), dtype=np.uint8)).save(one / "a.png")
    assert "at least 3" in error_of("--model", "LRAE_VC", "--data", str(one), "--out-dir", str(tmp_path / "z"))
    assert "CUDA" in error_of("--model", "LRAE_VC", "--device", "cuda", *TINY) or torch.cuda.is_available()
    # an existing run folder is never overwritten without --resume
    out = run(tmp_path, "--model", "LRAE_VC", "--max-steps", "1")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert "already holds a run" in error_of("--model", "LRAE_VC", *TINY, "--out-dir", str(out))
    assert before == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # a checkpoint of another model
    pnc = run(tmp_path, "--model", "PNC", "--max-steps", "1", "--size", "56", name="pnc")
    msg = error_of("--model", "LRAE_VC", *TINY, "--model_path", str(pnc / "PNC_final_w_random_drops.pth"),
                   "--out-dir", str(tmp_path / "x"))
    assert "holds a PNC model" in msg
    # a corrupt image in a data folder
    bad = tmp_path / "photos"
    bad.mkdir()
    for i in range(8):
        Image.fromarray(np.full((80, 80, 3), 30 * i, dtype=np.uint8)).save(bad / f"ok{i}.png")
    (bad / "broken.png").write_bytes(b"\x89PNG garbage")
    assert "broken.png" in error_of("--model", "LRAE_VC", "--data", str(bad), "--out-dir", str(tmp_path / "y"),
                                    "--size", "64", "--batch-size", "2", "--amp", "none")


def test_clip_grad_reaches_the_optimizer(tmp_path):
    """--clip-grad: at a clip norm far below the gradient's, Adam's epsilon dominates the rescaled gradient, so
    the first step differs from an unclipped run's (which is reproducible to the bit)."""
    common = ["--model", "LRAE_VC", "--max-steps", "1", "--lr", "1e-2", "--model-args", '{"width": 8, "blocks": 1}']
    plain = weights(run(tmp_path, *common, name="plain") / "last.pth")
    again = weights(run(tmp_path, *common, name="again") / "last.pth")
    clipped = weights(run(tmp_path, *common, "--clip-grad", "1e-12", name="clipped") / "last.pth")
    assert all(torch.equal(plain[k], again[k]) for k in plain)
    moved = max(float((clipped[k] - plain[k]).abs().max()) for k in plain if plain[k].is_floating_point())
    assert moved > 1e-4 and all(torch.isfinite(v).all() for v in clipped.values() if v.is_floating_point())


def test_model_path_brings_its_architecture(tmp_path):
    """--model_path continues a model of another width without repeating --model-args."""
    first = run(tmp_path, "--model", "LRAE_VC", "--max-steps", "1", "--model-args", '{"width": 8, "blocks": 1}',
                name="first")
    second = run(tmp_path, "--model", "LRAE_VC", "--max-steps", "1", "--model_path", str(first / "last.pth"),
                 name="second")
    assert load_model(second / "last.pth").config["width"] == 8


def test_model_path_grows_into_a_larger_model(tmp_path):
    """--model-args may add blocks to --model_path's architecture: its weights load, the new blocks start as
    the identity (the grown model decodes as the old one); weights that do not fit are refused."""
    first = run(tmp_path, "--model", "LRAE_VC", "--max-steps", "1", "--model-args", '{"width": 8, "blocks": 1}',
                name="first")
    grown = run(tmp_path, "--model", "LRAE_VC", "--max-steps", "0", "--model_path", str(first / "last.pth"),
                "--model-args", '{"tail_blocks": 2}', name="grown")
    old, new = load_model(first / "last.pth"), load_model(grown / "LRAE_VC_final_w_random_drops.pth")
    assert new.config["tail_blocks"] == 2 and new.config["width"] == 8
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(old(x)["x_hat"], new(x)["x_hat"])
    with pytest.raises(SystemExit, match="^error: weights do not fit the larger model: .* has another shape$"):
        run(tmp_path, "--model", "LRAE_VC", "--max-steps", "0", "--model_path", str(first / "last.pth"),
            "--model-args", '{"up_width": 16}', name="misfit")


def test_drops_from_trains_clean_first_then_ramps():
    from training.engine import Step

    def at(step, curriculum=0.0, start=0.0):
        return Step(0, 0, step, 100, 1e-3, torch.Generator(), curriculum, start).ramp(12)

    assert [at(s, start=0.8) for s in (0, 79, 80, 99)] == [0, 0, 12, 12]
    assert [at(s, 0.1, 0.8) for s in (79, 80, 84, 89, 95)] == [0, 1, 6, 12, 12]
    assert [at(s, 0.5) for s in (0, 49, 99)] == [0, 12, 12]  # the curriculum alone, as before


def test_drops_from_reaches_the_masks(tmp_path):
    out = run(tmp_path, "--model", "LRAE_VC", "--max-steps", "20", "--drops-from", "0.5", "--drops", "8",
              "--model-args", '{"width": 8, "blocks": 1}')
    logged = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines() if '"max_drop"' in s]
    assert [r["max_drop"] for r in logged if r["step"] in (10, 20)] == [0, 8]  # logged every 10 steps
