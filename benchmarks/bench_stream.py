"""Stream frames over loopback and report per-stage latency (p50/p95) and bytes per frame.

    python -m benchmarks.bench_stream                                   # untrained PNC16 and LRAE_VC
    python -m benchmarks.bench_stream --ckpt LRAE_VC_final_w_random_drops.pth --ckpt PNC16.pth
    python -m benchmarks.bench_stream --models LRAE_VC --loss random:0.3 --transport udp --frames 300

Runs receiver_decode.py and sender_encode.py as two processes (one torch thread each) streaming
``--frames`` frames of ``--input`` (looped) at ``--fps`` and ``--size``. Stages: sender encode,
entropy code, send; receiver arrival (capture -> last packet in), wait (capture -> frame closed),
entropy decode, fill, decode; total = capture -> decoded. "backlog" compares the median latency
of the last and first fifth of the frames: a value that grows means the receiver cannot keep up.
An inter codec's checkpoint (LRAE_RD_P) streams I/P frames with the receiver's feedback (both scripts'
default); its row adds the P-frames, the feedback reports and whether the sender's mirror ended in step.
Writes bench_stream.json into --out-dir and prints a table. Not a test (takes about 15 s per model).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from models import build_model
from utils.checkpoint import make_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", action="append", default=[], help="checkpoint(s) to stream (repeatable)")
    p.add_argument("--models", nargs="+", default=["PNC16", "LRAE_VC"],
                   help="untrained registry models to stream when no --ckpt is given")
    p.add_argument("--input", default="sample", help="frames to stream (looped)")
    p.add_argument("--frames", type=int, default=300, help="frames per run")
    p.add_argument("--fps", type=float, default=30.0, help="sender pacing")
    p.add_argument("--size", type=int, default=224, help="frame side")
    p.add_argument("--transport", choices=("tcp", "udp"), default="tcp", help="transport")
    p.add_argument("--loss", default="none", help="emulated loss at the sender")
    p.add_argument("--deadline-ms", type=float, default=30.0, help="receiver (and sender) deadline")
    p.add_argument("--port", type=int, default=0, help="receiver port (0: any free one)")
    p.add_argument("--max-lag-ms", type=float, default=0.0, help="receiver catch-up threshold (0 = off)")
    p.add_argument("--out-dir", default=None, help="where results go (default: a temporary folder)")
    return p.parse_args(argv)


def pct(values, q):
    vals = [v for v in values if v is not None]
    return round(float(np.percentile(vals, q)), 2) if vals else None


def run_one(ckpt: str, args, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    rx_dir = out / Path(ckpt).stem
    rx = subprocess.Popen([sys.executable, str(ROOT / "receiver_decode.py"), "--model-path", ckpt,
                           "--port", str(args.port), "--transport", args.transport, "--out-dir", str(rx_dir),
                           "--once", "--no-png", "--deadline-ms", str(args.deadline_ms), "--reference", args.input,
                           "--max-lag-ms", str(args.max_lag_ms)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    port = None
    for line in rx.stdout:
        if line.startswith("Listening on"):
            port = line.strip().rsplit(":", 1)[1]
            break
    if port is None:
        raise SystemExit(f"error: the receiver for {ckpt} did not start")
    stats = rx_dir / "sender.jsonl"
    tx = subprocess.run([sys.executable, str(ROOT / "sender_encode.py"), "--model-path", ckpt, "--port", port,
                         "--transport", args.transport, "--input", args.input, "--loop", "--max-frames",
                         str(args.frames), "--fps", str(args.fps), "--size", str(args.size), "--loss", args.loss,
                         "--deadline-ms", str(args.deadline_ms), "--stats", str(stats)],
                        capture_output=True, text=True, env=env)
    if tx.returncode:
        rx.kill()
        raise SystemExit(f"error: sender failed: {tx.stderr.strip().splitlines()[-1:]}")
    rx.communicate(timeout=600)
    send = [json.loads(s) for s in stats.read_text().splitlines()]
    recv = [json.loads(s) for s in (rx_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((rx_dir / "summary.json").read_text())
    fifth = max(1, len(recv) // 5)
    lat = [r["latency_ms"] for r in recv]
    row = {"checkpoint": ckpt, "frames": len(recv), "frames_lost": summary["frames_lost"],
           "frames_skipped": sum(r["concealment"] == "skipped_late" for r in recv),
           "bytes_per_frame_sent": round(sum(r["bytes_sent"] for r in send) / len(send), 1),
           "bytes_per_frame_received": summary["bytes_per_frame"], "mean_psnr": summary["mean_psnr"],
           "sender_lag_ms_max": max(r["lag_ms"] for r in send),
           "backlog_ms": round((pct(lat[-fifth:], 50) or 0) - (pct(lat[:fifth], 50) or 0), 2),
           "dropped_packets": summary["dropped_packets"]}
    if "feedback_sent" in summary:  # an I/P stream (inter codec): with the receiver's feedback by default
        sent = json.loads(tx.stdout[tx.stdout.index("{"):])
        row.update(p_frames=sent["p_frames"], feedback_sent=summary["feedback_sent"],
                   feedback_received=sent["feedback_received"],
                   in_step=sent["mirror_sha256"] == summary["last_frame_sha256"])
    stages = {"encode": [r["encode_ms"] for r in send], "entropy_code": [r["entropy_ms"] for r in send],
              "send": [r["send_ms"] for r in send], "arrival": [r["arrival_ms"] for r in recv],
              "wait": [r["wait_ms"] for r in recv], "entropy_decode": [r["entropy_ms"] for r in recv],
              "fill": [r["fill_ms"] for r in recv], "decode": [r["decode_ms"] for r in recv], "total": lat}
    row["stages_ms"] = {k: {"p50": pct(v, 50), "p95": pct(v, 95)} for k, v in stages.items()}
    return row


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="bench_stream_"))
    out.mkdir(parents=True, exist_ok=True)
    ckpts = list(args.ckpt)
    if not ckpts:
        torch.manual_seed(0)
        for name in args.models:
            ckpts.append(str(save_checkpoint(out / f"{name}_untrained.pth", make_checkpoint(build_model(name)))))
    rows = [run_one(c, args, out) for c in ckpts]
    (out / "bench_stream.json").write_text(json.dumps(rows, indent=2) + "\n")
    for r in rows:
        print(f"\n{r['checkpoint']}: {r['frames']} frames, {r['frames_lost']} lost, {r['frames_skipped']} skipped, "
              f"{r['bytes_per_frame_sent']} B/frame sent, PSNR {r['mean_psnr']}, backlog {r['backlog_ms']} ms, "
              f"sender lag max {r['sender_lag_ms_max']} ms, drops {r['dropped_packets']}")
        if "p_frames" in r:
            print(f"  I/P stream: {r['p_frames']} P-frames, feedback {r['feedback_sent']} sent / "
                  f"{r['feedback_received']} received, sender's mirror in step at the end: {r['in_step']}")
        print("  " + "  ".join(f"{k} {v['p50']}/{v['p95']}" for k, v in r["stages_ms"].items()) + "  (ms p50/p95)")
    print(f"\nresults: {out / 'bench_stream.json'}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
