"""Rate and quality of the wire codec per quantisation setting: real bytes per frame on the wire and
PSNR of the decoded frame against the original, with and without quantisation.

    python -m benchmarks.bench_quant --model-path LRAE_VC_final_w_random_drops.pth
    python -m benchmarks.bench_quant --model-path CKPT --bits 5 6 --frames 120 --input clip.mp4
    python -m benchmarks.bench_quant --model-path CKPT --bits 6 --write-ckpt CKPT_calibrated.pth

For each bits value it measures both quantiser modes: "frame" (per-frame ranges in the packet,
parametric tables; any checkpoint) and "calibrated" (static ranges and per-channel tables from
``--calib-data``'s training split, as codec/quant.calibrate stores them in ckpt["extra"]["codec"]).
``--write-ckpt`` saves a copy of the checkpoint with the calibration of the first ``--bits`` value.
Prints one JSON line per setting and a table.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch.utils.data import DataLoader, Subset

from codec.packetize import decode_packets, make_codec, packetize_latent
from codec.quant import calibrate
from codec.wire import HEADER_SIZE
from data import FrameDataset, load_videos, read_frames, split_videos
from models import load_codec_model
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.metrics import psnr


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-path", "--model_path", required=True, help="frame model checkpoint")
    p.add_argument("--input", default="sample", help="test frames (video, folder or 'sample')")
    p.add_argument("--frames", type=int, default=60, help="test frames used")
    p.add_argument("--size", type=int, default=224, help="frame side")
    p.add_argument("--bits", type=int, nargs="+", default=[3, 4, 5, 6, 8], help="bits to measure")
    p.add_argument("--calib-data", nargs="+", default=["sample"], help="data whose training split calibrates")
    p.add_argument("--calib-frames", type=int, default=256, help="training frames used for calibration")
    p.add_argument("--write-ckpt", default=None, help="save the checkpoint with calibration here")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration subsample")
    return p.parse_args(argv)


def calibration_batches(specs, size: int, frames: int, seed: int):
    split = split_videos(load_videos(specs, size=size, seed=seed), seed=seed)
    ds = FrameDataset(split["train"], crop=size, train=False)
    idx = torch.linspace(0, len(ds) - 1, min(frames, len(ds))).round().long().unique().tolist()
    return [b["x"] for b in DataLoader(Subset(ds, idx), batch_size=16)]


@torch.no_grad()
def measure(model, codec, frames) -> dict:
    total, payload, p_quant, p_plain, p_self = 0, 0, [], [], []
    for i, x8 in enumerate(frames):
        x = x8[None].float() / 255.0
        z = model.encode(x)
        packets = packetize_latent(z[0], i, codec)
        zq, mask = decode_packets(packets, codec)
        total += sum(map(len, packets))
        payload += sum(len(p) - HEADER_SIZE for p in packets)
        x_q, x_u = model.decode(zq, mask), model.decode(z)
        p_quant.append(float(psnr(x_q, x8)[0]))
        p_plain.append(float(psnr(x_u, x8)[0]))
        p_self.append(float(psnr(x_q, x_u)[0]))
    n = len(frames)
    return {"bytes_per_frame": round(total / n, 1), "payload_per_frame": round(payload / n, 1),
            "psnr_unquantised": round(sum(p_plain) / n, 3), "psnr_quantised": round(sum(p_quant) / n, 3),
            "psnr_drop": round((sum(p_plain) - sum(p_quant)) / n, 3),
            "psnr_quantised_vs_unquantised": round(sum(p_self) / n, 3)}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    model, _, _ = load_codec_model(args.model_path)
    frames = []
    for f in read_frames(args.input, size=args.size):
        frames.append(f)
        if len(frames) >= args.frames:
            break
    batches = calibration_batches(args.calib_data, args.size, args.calib_frames, args.seed)
    rows = []
    for k, bits in enumerate(args.bits):
        cal = calibrate(model, batches, bits=bits, seed=args.seed)
        if k == 0 and args.write_ckpt:
            ckpt = load_checkpoint(args.model_path)
            ckpt.setdefault("extra", {})["codec"] = cal
            save_checkpoint(args.write_ckpt, ckpt)
        for mode, codec in (("frame", make_codec(model, None, bits)), ("calibrated", make_codec(model, cal))):
            row = {"model": model.model_name, "bits": bits, "mode": mode, **measure(model, codec, frames)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n{'bits':>4} {'mode':>10} {'bytes/frame':>11} {'payload':>8} {'PSNR':>7} {'PSNR q':>7} {'drop':>6} "
          f"{'q vs unq':>8}")
    for r in rows:
        print(f"{r['bits']:>4} {r['mode']:>10} {r['bytes_per_frame']:>11} {r['payload_per_frame']:>8} "
              f"{r['psnr_unquantised']:>7} {r['psnr_quantised']:>7} {r['psnr_drop']:>6} "
              f"{r['psnr_quantised_vs_unquantised']:>8}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
