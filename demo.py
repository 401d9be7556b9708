"""The LRAE-VC demo: stream the embedded sample clip (carphone) over loopback TCP with 30 % packet loss,
decode it with zero fill and with a fill from the past, and compare against JPEG and H.264.

    make demo                                 # creates .venv, installs, then: python demo.py --out-dir runs/demo
    python demo.py --kbps 600                 # the sender's rate control holds 600 kbit/s (5 KB/frame at 15 fps)
    python demo.py --model-path checkpoints/LRAE_VC.pth --temporal checkpoints/conv_lstm_ae.pth   # v1 + ConvLSTM
    python demo.py --max-frames 30 --eval-frames 16 --out-dir runs/demo-quick      # a quicker look
    python demo.py --input clip.mp4 --loss burst:0.3,4 --out-dir runs/demo-burst

The model is LRAE_RD_P (checkpoints/LRAE_RD_P.pth): I-frames from LRAE_RD (learned entropy model, quality
levels), P-frames that code the change of its latent against the receiver's own, with the receiver's
feedback keeping the sender's mirror in step (playback/inter.py); a lost channel keeps its last value.
With a frame codec (``--model-path checkpoints/LRAE_RD.pth``) every frame is coded alone and the receiver
fills a lost channel with its last received value (policy ``copy``), compared with zero fill; with
``--temporal`` (a conv_lstm_ae over the same frame model) the ConvLSTM fills instead.

Steps, each a subprocess of this Python (``--threads`` torch threads each), all offline:
1. receiver_decode.py --once --reference INPUT on a free 127.0.0.1 port (a frame codec: with
   --policy copy|convlstm --compare-zero-fill; its "Listening on" line is awaited, ``--startup-timeout``);
2. sender_encode.py --input INPUT --loss random:0.3 --seed 1 over TCP at ``--fps`` (15: sender, receiver
   and the receiver's second decode share the CPU) and its 30 ms deadline (``--kbps``: with rate control);
   both must finish within ``--timeout`` s;
3. evaluate.py on the same clip (ours with zero fill, copy fill, the I/P stream ``ours-p`` of an inter
   codec and, with ``--temporal``, the ConvLSTM; JPEG, H.264; at loss rates 0, 0.1, 0.3, 0.5;
   ``--eval-frames`` frames; 0 skips it), for the quality-vs-loss plot.

Writes ``--out-dir`` (a scratch folder: every run replaces it; a folder that demo.py did not create
is never removed, and nothing outside it is written):
  stream/side_by_side.mp4   original | the I/P stream; a frame codec: original | received with zero fill |
                            received with the copy (or ConvLSTM) fill
  stream/metrics.jsonl      one line per frame: psnr/ssim (the main variant), frame_type (I/P) or
                            psnr_zero_fill/ssim_zero_fill, bytes, quality level, channels received,
                            latency_ms, ...; stream/summary.json
  eval/                     evaluate.py's results and plots (quality vs loss rate)
  summary.json, args.json, receiver.log, sender.log, evaluate.log
and prints a short summary: frames, bytes/frame, PSNR per variant, latency p50/p95, where the files are.
A missing checkpoint, a step that fails or hangs: one line on stderr naming it, non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MARKER = ".lrae-vc-demo"  # marks a folder demo.py made, and may therefore replace
EVAL_RATES = "0,0.1,0.3,0.5"
EVAL_BASELINES = "jpeg,h264"
FILL_NAMES = {"convlstm": "ConvLSTM fill", "copy": "copy fill", "inter": "I/P stream with feedback"}
log = logging.getLogger("demo")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-path", "--model_path", default="checkpoints/LRAE_RD_P.pth",
                   help="codec checkpoint with its wire tables: an inter codec (LRAE_RD_P) or a frame codec "
                        "(LRAE_RD, or LRAE_VC with --temporal)")
    p.add_argument("--temporal", default=None,
                   help="conv_lstm_ae checkpoint over the same frame autoencoder (e.g. checkpoints/conv_lstm_ae.pth "
                        "with checkpoints/LRAE_VC.pth): the receiver's main fill becomes the ConvLSTM")
    p.add_argument("--fps", type=float, default=15.0,
                   help="the sender's frame rate (sender, receiver and the receiver's zero-fill comparison share "
                        "the CPU: on 2 cores LRAE_RD falls behind at 30 fps and its latency grows)")
    p.add_argument("--kbps", type=float, default=None,
                   help="the sender's rate control target (a model with quality levels); default: its top level")
    p.add_argument("--out-dir", "--out_dir", default="runs/demo", help="scratch folder, replaced on every run")
    p.add_argument("--input", "--input-dir", "--input_dir", dest="input", default="sample",
                   help="video file, folder of frames, or 'sample' (the embedded carphone clip)")
    p.add_argument("--size", type=int, default=224, help="frame side (resize + center crop)")
    p.add_argument("--max-frames", "--max_frames", type=int, default=None,
                   help="stream at most this many frames (default: the whole clip)")
    p.add_argument("--loss", default="random:0.3", help="emulated packet loss of the stream (network/loss/models.py)")
    p.add_argument("--seed", type=int, default=1, help="seed of the stream's emulated loss")
    p.add_argument("--eval-frames", "--eval_frames", type=int, default=48,
                   help="frames evaluate.py scores per method and loss rate (0: skip the evaluation)")
    p.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for the receiver to listen")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds each step may take at most")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per step")
    return p.parse_args(argv)


# ---------------------------------------------------------------- the scratch folder
def is_inside(path: Path, folder: Path) -> bool:
    return path.resolve() == folder or folder in path.resolve().parents


def prepare_out_dir(out: Path, keep: list[Path]) -> Path:
    """Empty ``out`` for a new run. Only a folder with demo.py's marker (or an empty one) is replaced."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise SystemExit(f"error: --out-dir {out} exists and is not a plain folder; choose another --out-dir")
    out = out.resolve()
    for path in keep:
        if is_inside(path, out):
            raise SystemExit(f"error: {path} is inside --out-dir {out}, which every run replaces; move it")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise SystemExit(f"error: refusing to replace {out}: demo.py did not make it (no {MARKER} file); "
                         "choose another --out-dir")
    try:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        (out / MARKER).write_text("scratch folder written by demo.py; the next run replaces it\n")
    except OSError as e:
        raise SystemExit(f"error: cannot prepare --out-dir {out}: {e.strerror or e}") from None
    return out


# ---------------------------------------------------------------- the steps
def child_env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def reason(path: Path) -> str:
    """What a failed step said: its last ``error: ...`` line (the scripts' convention), else its last line."""
    lines = [s.strip() for s in path.read_text(errors="replace").splitlines() if s.strip()] if path.exists() else []
    errors = [s for s in lines if s.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1]


def failed(step: str, code: int, log_path: Path) -> SystemExit:
    return SystemExit(f"error: {step} failed (exit code {code}): {reason(log_path)} [log: {log_path}]")


def start_receiver(args, out: Path, paths: dict):
    """Start receiver_decode.py on a free port; returns (process, port) once it listens."""
    log_path = out / "receiver.log"
    fills = ["--side-by-side"] if paths["inter"] else ["--policy", policy(paths), "--compare-zero-fill"]
    cmd = [sys.executable, str(ROOT / "receiver_decode.py"), "--model-path", paths["model"],
           *temporal_flags(paths), *fills, "--host", "127.0.0.1",
           "--port", "0", "--once", "--out-dir", str(out / "stream"), "--reference", paths["input"], "--no-png",
           "--mp4-fps", str(args.fps),
           "--threads", str(args.threads)]
    with open(log_path, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=child_env(args.threads))
    deadline = time.monotonic() + args.startup_timeout
    while True:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("Listening on "):
                return proc, int(line.rsplit(":", 1)[1])
        if proc.poll() is not None:
            raise failed("the receiver", proc.returncode, log_path)
        if time.monotonic() > deadline:
            raise SystemExit(f"error: the receiver did not start listening within {args.startup_timeout:.0f} s "
                             f"(--startup-timeout) [log: {log_path}]")
        time.sleep(0.1)


def temporal_flags(paths: dict) -> list[str]:
    return ["--temporal", paths["temporal"]] if paths["temporal"] else []


def policy(paths: dict) -> str:
    """The receiver's main variant: an inter codec's I/P stream; else its fill: the ConvLSTM with a temporal
    model, copy (the last received value) without."""
    return "inter" if paths["inter"] else "convlstm" if paths["temporal"] else "copy"


def is_inter(path: str) -> bool:
    """Whether the checkpoint at ``path`` holds an inter codec (its own metadata says). A checkpoint that
    cannot be read is left to the receiver, which says what is wrong with it."""
    from models import kind_of
    from utils.checkpoint import CheckpointError, load_checkpoint

    try:
        return kind_of(load_checkpoint(path)["model"]) == "inter"
    except (CheckpointError, KeyError):
        return False


def run_step(step: str, cmd: list[str], log_path: Path, args) -> str:
    """Run one script to completion; returns its stdout (stderr goes to ``log_path``)."""
    with open(log_path, "w") as f:
        try:
            res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, stdin=subprocess.DEVNULL, text=True,
                                 env=child_env(args.threads), timeout=args.timeout)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"error: {step} did not finish within {args.timeout:.0f} s (--timeout) "
                             f"[log: {log_path}]") from None
        f.write(res.stdout)
    if res.returncode:
        raise failed(step, res.returncode, log_path)
    return res.stdout


def stream(args, out: Path, paths: dict) -> tuple[dict, dict]:
    """Receiver and sender over loopback TCP; returns their summaries."""
    rx, port = start_receiver(args, out, paths)
    try:
        log.info("receiver listening on 127.0.0.1:%d; streaming %s with %s loss", port, args.input, args.loss)
        cmd = [sys.executable, str(ROOT / "sender_encode.py"), "--input", paths["input"],
               "--model-path", paths["model"], "--host", "127.0.0.1", "--port", str(port), "--transport", "tcp",
               "--loss", args.loss, "--seed", str(args.seed), "--size", str(args.size), "--threads", str(args.threads),
               "--fps", str(args.fps)]
        if args.max_frames is not None:
            cmd += ["--max-frames", str(args.max_frames)]
        if args.kbps is not None:
            cmd += ["--kbps", str(args.kbps)]
        stdout = run_step("the sender", cmd, out / "sender.log", args)
        sent = json.loads(stdout[stdout.index("{"):])
        try:
            code = rx.wait(args.timeout)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"error: the receiver did not finish within {args.timeout:.0f} s after the sender "
                             f"(--timeout) [log: {out / 'receiver.log'}]") from None
        if code:
            raise failed("the receiver", code, out / "receiver.log")
    finally:
        if rx.poll() is None:  # only on an error above: never leave our receiver behind
            rx.terminate()
            try:
                rx.wait(10)
            except subprocess.TimeoutExpired:
                rx.kill()
                rx.wait()
    received = json.loads((out / "stream" / "summary.json").read_text())
    return sent, received


def evaluate(args, out: Path, paths: dict) -> dict:
    """evaluate.py on the same clip: quality vs loss rate for ours (zero fill, copy fill, ConvLSTM with
    --temporal), JPEG and H.264."""
    script = ROOT / "evaluate.py"
    if args.eval_frames <= 0:
        return {"skipped": "--eval-frames 0"}
    if not script.is_file():
        # EVALUATE-CALL: evaluate.py (another helper's) is not in the tree yet; the call below is ready.
        log.warning("%s is missing: skipping the quality-vs-loss evaluation", script)
        return {"skipped": "evaluate.py not found"}
    cmd = [sys.executable, str(script), "--model_path", paths["model"], *temporal_flags(paths),
           "--data", paths["input"], "--loss", "random", "--rates", EVAL_RATES, "--baselines", EVAL_BASELINES,
           "--seed", "0", "--out", str(out / "eval"), "--max-frames", str(args.eval_frames),
           "--size", str(args.size)]
    log.info("evaluating %d frames at loss rates %s against %s", args.eval_frames, EVAL_RATES, EVAL_BASELINES)
    run_step("evaluate.py", cmd, out / "evaluate.log", args)
    return {"dir": str(out / "eval"), "plots": [str(p) for p in sorted((out / "eval").rglob("*.png"))]}


# ---------------------------------------------------------------- the summary
def fmt(value, spec: str = ".2f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def shown(path: str) -> str:
    """A path as the user typed it: relative to the working directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def report(summary: dict) -> str:
    tx, rx, ev, files = summary["sender"], summary["receiver"], summary["evaluate"], summary["files"]
    drops = ", ".join(f"{k} {v}" for k, v in rx.get("dropped_packets", {}).items()) or "none"
    plots = ", ".join(map(shown, ev.get("plots", []))) or f"none ({ev.get('skipped', 'evaluate.py wrote no png')})"
    name = FILL_NAMES[summary["policy"]]
    if summary["policy"] == "inter":
        quality = (f"  PSNR           {name} {fmt(rx.get('mean_psnr'), '.2f', ' dB')} (SSIM "
                   f"{fmt(rx.get('mean_ssim'), '.3f')}); {tx.get('p_frames', 0)} P-frames, "
                   f"{tx.get('feedback_received', 0)} feedback reports received")
    else:
        quality = (f"  PSNR           zero fill {fmt(rx.get('mean_psnr_zero_fill'), '.2f', ' dB')} | "
                   f"{name} {fmt(rx.get('mean_psnr'), '.2f', ' dB')}   "
                   f"(SSIM {fmt(rx.get('mean_ssim_zero_fill'), '.3f')} | {fmt(rx.get('mean_ssim'), '.3f')})")
    lines = [
        f"LRAE-VC demo: {rx['frames']} frames of {summary['input']} streamed over TCP on 127.0.0.1 with "
        f"emulated packet loss {summary['loss']} (seed {summary['seed']})",
        f"  bytes/frame    {fmt(tx['bytes_per_frame_encoded'], '.0f')} encoded, "
        f"{fmt(rx['bytes_per_frame'], '.0f')} received ({fmt(tx['packets_per_frame'], '.0f')} packets/frame; "
        f"lost: {tx['packets_lost_emulated']} emulated, {tx['packets_deadline_dropped']} past the sender's "
        f"deadline; receiver drops: {drops})",
        quality,
        f"  latency        p50 {fmt(rx['latency_ms_p50'], '.1f', ' ms')}, p95 {fmt(rx['latency_ms_p95'], '.1f', ' ms')}"
        f" (capture to decoded frame, {name})",
        f"  side by side   {shown(files['side_by_side'])}",
        f"  per frame      {shown(files['metrics'])}",
        f"  quality/loss   {plots}",
        f"  took {summary['seconds']:.0f} s; everything is in {shown(files['out_dir'])}",
    ]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.monotonic()
    for flag, path in (("--model-path", args.model_path), ("--temporal", args.temporal)):
        if path is not None and not Path(path).is_file():
            raise SystemExit(f"error: missing checkpoint {path} ({flag}); the shipped checkpoints belong in "
                             f"checkpoints/ - train them, or pass {flag} PATH")
    if args.size < 8 or args.size % 8:
        raise SystemExit(f"error: --size must be a positive multiple of 8, got {args.size}")
    if args.max_frames is not None and args.max_frames < 1:
        raise SystemExit(f"error: --max-frames must be at least 1, got {args.max_frames}")
    local = Path(args.input).expanduser()
    local = local if args.input != "sample" and local.exists() else None  # "sample" is the embedded clip
    paths = {"model": str(Path(args.model_path).resolve()),
             "temporal": str(Path(args.temporal).resolve()) if args.temporal else None,
             "input": str(local.resolve()) if local else args.input,
             "inter": is_inter(args.model_path)}
    if paths["inter"] and args.temporal:
        raise SystemExit(f"error: {args.model_path} holds an inter codec: its I/P stream has no fill to replace, "
                         "--temporal does not apply")
    keep = [Path(p) for p in (paths["model"], paths["temporal"]) if p] + ([local] if local else [])
    if args.kbps is not None and not args.kbps > 0 or not args.fps > 0:
        raise SystemExit(f"error: --kbps and --fps must be > 0, got {args.kbps}, {args.fps}")
    out = prepare_out_dir(Path(args.out_dir), keep)
    (out / "args.json").write_text(json.dumps(vars(args), indent=2) + "\n")
    try:
        sent, received = stream(args, out, paths)
        evaluated = evaluate(args, out, paths)
    except KeyboardInterrupt:
        raise SystemExit("interrupted") from None
    summary = {"input": args.input, "loss": args.loss, "seed": args.seed, "size": args.size, "policy": policy(paths),
               "kbps": args.kbps,
               "sender": sent, "receiver": received, "evaluate": evaluated,
               "files": {"out_dir": str(out), "side_by_side": str(out / "stream" / "side_by_side.mp4"),
                         "metrics": str(out / "stream" / "metrics.jsonl")},
               "seconds": round(time.monotonic() - t0, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(report(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
