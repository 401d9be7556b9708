"""Encode and decode speed of the frame models, side by side, in ms per frame.

Each model runs on one random 224x224 frame (batch 1) in fp32 and in bf16 (``torch.autocast`` with
bfloat16 and channels_last tensors), with a few warm-up calls and then ``--iters`` timed calls of
``encode`` and of ``decode``; the table shows the median and the 95th percentile. Untrained weights
time the same as trained ones; ``--checkpoint`` times saved models instead, and for a frame codec its
wire codec too: the "entropy dec" column is parsing and entropy-decoding one frame's packets into the
latent (codec.packetize.decode_packets; fp32 only, on the sample clip's first frame, coded at the top
quality level), which a receiver pays on top of ``decode``. Run from the repo root:

    python -m benchmarks.bench_models                         # PNC, PNC16, PNC32, LRAE_VC; 2 threads
    python -m benchmarks.bench_models --iters 20 --warmup 3 --json runs/bench_models.json
    python -m benchmarks.bench_models --models PNC16 LRAE_VC --precision bf16 --threads 1
    python -m benchmarks.bench_models --checkpoint runs/lrae-random/best.pt --checkpoint runs/pnc16/best.pt
    python -m benchmarks.bench_models --device cuda          # CUDA is synchronised around every call
    python -m benchmarks.bench_models --checkpoint checkpoints/LRAE_RD.pth --precision fp32   # + entropy dec

An inter codec (LRAE_VC_P) is timed on a P-frame: encode against a reference, and decode including the
reference handling (playback.inter.next_frame); its entropy column decodes a P-frame's packets.

The decode ratio LRAE_VC / PNC16 (medians) is printed for each precision when both models ran.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from codec.packetize import check_quality, decode_packets, encode_frame
from data import read_frames
from models import MODELS, build_model, load_codec_model
from playback.inter import InterEncoder, next_frame

log = logging.getLogger(__name__)

DEFAULT_MODELS = ["PNC", "PNC16", "PNC32", "LRAE_VC"]
PRECISIONS = ["fp32", "bf16"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None,
                   help=f"registry models to build with untrained weights (default: {' '.join(DEFAULT_MODELS)}, "
                        "or none when --checkpoint is given)")
    p.add_argument("--checkpoint", "--model-path", "--model_path", action="append", default=[],
                   help="a saved model to time (repeatable)")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=PRECISIONS, help="precisions to time")
    p.add_argument("--size", type=int, default=224, help="frame height and width")
    p.add_argument("--batch", type=int, default=1, help="frames per call (times are per frame)")
    p.add_argument("--iters", type=int, default=20, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device to run on")
    p.add_argument("--seed", type=int, default=0, help="seed for the weights of built models and the frame")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    for name in ("size", "batch", "iters", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def timed_ms(fn, iters: int, warmup: int, device: torch.device) -> list[float]:
    """Wall time of ``fn()`` in ms for each of ``iters`` calls, after ``warmup`` untimed calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summary(times_ms: list[float], batch: int) -> dict[str, float]:
    per_frame = np.asarray(times_ms) / batch
    return {"median": float(np.median(per_frame)), "p95": float(np.percentile(per_frame, 95))}


def bench_model(model: torch.nn.Module, x: torch.Tensor, precision: str, args) -> dict:
    """Median / p95 ms per frame of ``encode`` and of ``decode`` in one precision."""
    device = x.device
    if precision == "bf16":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    else:
        model = model.to(memory_format=torch.contiguous_format)
        autocast = contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        if getattr(model, "kind", None) == "inter":  # a P-frame against a reference, as the receiver shows it
            return bench_inter(model, x, precision, args)
        # The decoder gets the latent as it arrives from the wire: float32.
        z = model.encode(x).float()
        if precision == "bf16":
            z = z.contiguous(memory_format=torch.channels_last)
        enc = timed_ms(lambda: model.encode(x), args.iters, args.warmup, device)
        dec = timed_ms(lambda: model.decode(z), args.iters, args.warmup, device)
    return {"encode_ms": summary(enc, args.batch), "decode_ms": summary(dec, args.batch)}


def bench_inter(model, x: torch.Tensor, precision: str, args) -> dict:
    """An inter codec's P-frame at its top level, after an I-frame of the mirrored frame: encode against
    the receiver's state, and decode including the state handling (playback.inter.next_frame: the codec's
    ``play`` and the frame shown, rounded to 8 bits), inside bench_model's precision context."""
    q = model.levels - 1
    with torch.no_grad():
        z_i = torch.round(model.intra.encode(x.flip(-1), q)).float()
        mask = torch.ones(z_i.shape[:2], device=x.device)
        state = model.play(model.initial_state(tuple(z_i.shape[1:])), z_i, mask, False, q)
        z = torch.round(model.encode_inter(x, state, q)).float()
    if precision == "bf16":
        z = z.contiguous(memory_format=torch.channels_last)
    enc = timed_ms(lambda: model.encode_inter(x, state, q), args.iters, args.warmup, x.device)
    dec = timed_ms(lambda: next_frame(model, z, mask, True, q, state)[0].shown, args.iters, args.warmup, x.device)
    return {"encode_ms": summary(enc, args.batch), "decode_ms": summary(dec, args.batch)}


def load_models(args, device: torch.device) -> tuple[dict[str, torch.nn.Module], dict]:
    """({label: model}, {label: wire codec} for the checkpoints of frame codecs)."""
    names = args.models if args.models is not None else ([] if args.checkpoint else DEFAULT_MODELS)
    models, codecs = {}, {}
    for name in names:
        torch.manual_seed(args.seed)
        models[name] = build_model(name).to(device).eval()
    for path in args.checkpoint:
        try:
            model, codec, _ = load_codec_model(path)
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: cannot load {path}: {e}") from None
        label = model.model_name if model.model_name not in models else f"{model.model_name}@{Path(path).stem}"
        models[label], codecs[label] = model.to(device).eval(), codec
    if not models:
        raise SystemExit("error: nothing to time: give --models or --checkpoint")
    for label, model in models.items():
        try:
            model.check_size(args.size, args.size)
        except ValueError as e:
            raise SystemExit(f"error: {label}: {e}") from None
    return models, codecs


def bench_entropy(model, codec, frame: torch.Tensor, args) -> dict:
    """Median / p95 ms to parse and entropy-decode one frame's packets (all of them) into the latent."""
    quality = check_quality(codec.levels - 1, codec)
    with torch.inference_mode():
        if getattr(model, "kind", None) == "inter":  # a P-frame's packets: the frame against itself shifted
            encoder = InterEncoder(model, codec, model.latent_shape(*frame.shape[-2:]))
            encoder.encode(frame.roll(4, dims=-1), 0, quality)
            packets = encoder.encode(frame, 1, quality)[0]
        else:
            packets = encode_frame(model, frame[0], 0, codec, quality=quality)
    geometry = model.latent_shape(*frame.shape[-2:])
    times = timed_ms(lambda: decode_packets(packets, codec, geometry), args.iters, args.warmup, torch.device("cpu"))
    return {"entropy_decode_ms": summary(times, 1), "packets": len(packets),
            "payload_bytes": sum(len(p) for p in packets)}


def decode_ratios(results: list[dict]) -> dict[str, float]:
    """LRAE_VC decode median / PNC16 decode median, per precision, where both ran."""
    ratios = {}
    for precision in PRECISIONS:
        dec = {r["model"]: r["decode_ms"]["median"] for r in results if r["precision"] == precision}
        if "LRAE_VC" in dec and "PNC16" in dec:
            ratios[precision] = dec["LRAE_VC"] / dec["PNC16"]
    return ratios


def format_table(results: list[dict], precisions: list[str]) -> str:
    """One row per model; for each precision, encode and decode as "median p95" ms per frame."""
    rows: dict[str, dict] = {}
    for r in results:
        rows.setdefault(r["model"], {"latent": r["latent"]})[r["precision"]] = r
    cell = 15  # "median p95" = "%7.2f %7.2f"
    head = f"{'model':<16} {'latent':>9}"
    for precision in precisions:
        head += f" | {precision + ' encode':>{cell}} {precision + ' decode':>{cell}}"
    lines = [head, f"{'':<26}" + f" | {'median    p95':>{cell}} {'median    p95':>{cell}}" * len(precisions),
             "-" * len(head)]
    entropy = any("entropy_decode_ms" in r for r in results)
    if entropy:
        lines[0] += f" | {'entropy dec':>{cell}}"
        lines[1] += f" | {'median    p95':>{cell}}"
        lines[2] = "-" * len(lines[0])
    for model, row in rows.items():
        line = f"{model:<16} {'x'.join(map(str, row['latent'])):>9}"
        for precision in precisions:
            enc, dec = row[precision]["encode_ms"], row[precision]["decode_ms"]
            line += (f" | {enc['median']:7.2f} {enc['p95']:7.2f}"
                     f" {dec['median']:7.2f} {dec['p95']:7.2f}")
        ent = next((r["entropy_decode_ms"] for r in results if r["model"] == model and "entropy_decode_ms" in r), None)
        if entropy:
            line += f" | {ent['median']:7.2f} {ent['p95']:7.2f}" if ent else f" | {'-':>{cell}}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str]) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but CUDA is not available")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    models, codecs = load_models(args, device)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(args.seed))
    x = x.to(device)
    frame = next(iter(read_frames("sample", size=args.size))).float().div(255.0)[None].to(device) if codecs else None

    results = []
    jobs = [(label, model, precision) for label, model in models.items() for precision in args.precision]
    for label, model, precision in tqdm(jobs, desc="benchmark", unit="run", disable=None):
        r = bench_model(model, x, precision, args)
        if precision == "fp32" and label in codecs:
            r.update(bench_entropy(model, codecs[label], frame, args))
        results.append({"model": label, "precision": precision,
                        "latent": list(model.latent_shape(args.size, args.size)),
                        "params": sum(p.numel() for p in model.parameters()), **r})
        log.info("%s %s: encode %.2f ms, decode %.2f ms (median)", label, precision,
                 r["encode_ms"]["median"], r["decode_ms"]["median"])
    ratios = decode_ratios(results)
    report = {
        "command": ["python", "-m", "benchmarks.bench_models", *argv],
        "torch": torch.__version__, "device": args.device, "threads": args.threads,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "size": args.size, "batch": args.batch, "iters": args.iters, "warmup": args.warmup,
        "results": results, "decode_ratio_LRAE_VC_over_PNC16": ratios,
    }

    print(f"{args.size}x{args.size}, batch {args.batch}, {args.device}, {args.threads} thread(s), "
          f"{args.warmup} warm-up + {args.iters} timed calls; bf16 = autocast bfloat16 + channels_last")
    print(format_table(results, args.precision))
    for precision, ratio in ratios.items():
        print(f"decode LRAE_VC / PNC16 ({precision}): {ratio:.3f}  ({1 / ratio:.1f}x faster)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
