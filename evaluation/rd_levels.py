"""Rate-distortion of an LRAE_RD checkpoint per quality level, really coded, against JPEG.

For every quality level, on held-out frames (the training run's split, rebuilt from the same
``--data``/``--seed``): PSNR of the frame decoded from the coded channels, bits per pixel estimated
from the prior's likelihoods and actually coded (models/rd_coding.RDCoder: one range-coded byte
string per channel, integer tables from the level's prior), JPEG at matched bytes (per frame, the
highest JPEG quality that fits in our bytes), the BD-rate against JPEG's curve (qualities 2..95),
and PSNR under random channel loss (seeded masks, the channels' bytes lost with them)::

    python -m evaluation.rd_levels --model-path runs/012-LRAE_RD-mixed/best.pth \\
        --data ../shared/data/photos ../shared/data/video --split test --out runs/rd_eval.json
    python -m evaluation.rd_levels --model-path checkpoints/LRAE_RD.pth --data sample --split test  # carphone

Prints one row per level and writes the JSON given by ``--out`` and the plot given by ``--plot``.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from data import FrameDataset
from evaluation.baselines import decode_image, encode_image
from evaluation.runner import pick_videos
from models import load_model
from models.rd_coding import RDCoder
from training.engine import spaced
from utils import plots
from utils.metrics import bd_rate, psnr, to_uint8

JPEG_QUALITIES = (2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-path", "--model_path", required=True, help="an LRAE_RD checkpoint")
    p.add_argument("--data", nargs="+", default=["sample"], help="the training run's --data")
    p.add_argument("--size", type=int, default=224, help="short side; frames are centre-cropped square")
    p.add_argument("--seed", type=int, default=0, help="the training run's --seed (its split)")
    p.add_argument("--split", choices=("val", "test", "held-out", "all"), default="test",
                   help="videos to evaluate: a split of the training run's data and seed (held-out = val + test)")
    p.add_argument("--frames", type=int, default=48, help="evenly spaced frames of the split")
    p.add_argument("--loss", type=float, default=0.3, help="random channel loss rate of the loss rows")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--plot", default=None, help="write the RD plot (PSNR vs coded bpp, ours and JPEG) here")
    return p.parse_args(argv)


def held_out_frames(specs, size: int, seed: int, split: str, n: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` evenly spaced frames of the videos of ``split`` (evaluation.runner.pick_videos: the split a
    training run on ``specs`` with ``seed`` made), and the videos' names."""
    _, videos, _ = pick_videos(specs, size, seed, split)
    ds = spaced(FrameDataset(videos, crop=size, train=False), n)
    return torch.stack([ds[i]["x"] for i in range(len(ds))]), [v.name for v in videos]


def jpeg_curve(x: torch.Tensor) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """JPEG quality -> (bytes per frame, PSNR per frame)."""
    frames = to_uint8(x).permute(0, 2, 3, 1).numpy()
    out = {}
    for q in JPEG_QUALITIES:
        data = [encode_image(f, "jpeg", q) for f in frames]
        dec = torch.from_numpy(np.stack([decode_image(d) for d in data])).permute(0, 3, 1, 2)
        out[q] = (np.array([len(d) for d in data], dtype=np.float64), psnr(dec, x).numpy())
    return out


def jpeg_matched(curve, budget: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame the highest JPEG quality whose bytes fit ``budget`` (the lowest if none fits)."""
    nbytes, quality = np.zeros(len(budget)), np.zeros(len(budget))
    for i, b in enumerate(budget):
        fits = [q for q in JPEG_QUALITIES if curve[q][0][i] <= b] or [JPEG_QUALITIES[0]]
        nbytes[i], quality[i] = curve[fits[-1]][0][i], curve[fits[-1]][1][i]
    return nbytes, quality


@torch.no_grad()
def evaluate(model, x: torch.Tensor, loss_rate: float, seed: int = 0) -> dict:
    coder = RDCoder(model)
    b, _, height, width = x.shape
    shape = model.latent_shape(height, width)
    curve = jpeg_curve(x)
    rows = []
    for level in range(model.levels):
        q = torch.full((b,), level)
        y = model.encode(x, q)
        estimate = -torch.log2(model.likelihood(torch.round(y), q)).sum(dim=(1, 2, 3)).numpy() / 8
        frames = coder.compress(y, level)
        coded = np.array([sum(len(c) for c in f) for f in frames], dtype=np.float64)
        z = coder.decompress(frames, shape, level)
        ours = psnr(model.decode(z, None, q), x).numpy()
        g = torch.Generator().manual_seed(seed + level)
        mask = (torch.rand(b, shape[0], generator=g) >= loss_rate).float()  # i.i.d. channel loss, 1 = received
        z_lost = coder.decompress([[c if m else None for c, m in zip(f, row)] for f, row in zip(frames, mask.tolist())],
                                  shape, level)
        lossy = psnr(model.decode(z_lost, mask, q), x).numpy()
        jb, jp = jpeg_matched(curve, coded)
        rows.append({"level": level, "psnr": float(ours.mean()), "bytes": float(coded.mean()),
                     "bpp_coded": float(coded.mean() * 8 / (height * width)),
                     "bpp_estimated": float(estimate.mean() * 8 / (height * width)),
                     "coded_over_estimate": float(coded.sum() / estimate.sum()),
                     "jpeg_matched_psnr": float(jp.mean()), "jpeg_matched_bytes": float(jb.mean()),
                     f"psnr_loss_{loss_rate:g}": float(lossy.mean()),
                     "received_bytes_under_loss": float((coded * float(mask.mean())).mean())})
    jpeg = [{"quality": q, "bytes": float(v[0].mean()), "psnr": float(v[1].mean())} for q, v in curve.items()]
    bd = bd_rate([j["bytes"] for j in jpeg], [j["psnr"] for j in jpeg],
                 [r["bytes"] for r in rows], [r["psnr"] for r in rows])
    return {"levels": rows, "jpeg": jpeg, "bd_rate_vs_jpeg_percent": bd, "frames": b, "size": [height, width]}


def main(argv=None) -> dict:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = load_model(args.model_path, expect="LRAE_RD")
    x, names = held_out_frames(args.data, args.size, args.seed, args.split, args.frames)
    result = {"model_path": args.model_path, "data": args.data, "split": args.split, "held_out": names,
              **evaluate(model, x, args.loss, args.seed)}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot:
        plots.rd_levels_plot(result, args.plot, f"{args.model_path}: {args.split} ({len(x)} frames)")
    lossy = f"psnr_loss_{args.loss:g}"
    print(f"{len(x)} frames of {args.split} ({', '.join(names)}), {args.size}x{args.size}")
    print("level   PSNR  bytes  bpp coded/est  coded/est  JPEG@bytes  PSNR@loss " + f"{args.loss:g}")
    for r in result["levels"]:
        print(f"{r['level']:5d} {r['psnr']:6.2f} {r['bytes']:6.0f}  {r['bpp_coded']:.3f}/{r['bpp_estimated']:.3f}"
              f"     {r['coded_over_estimate']:.3f}  {r['jpeg_matched_psnr']:6.2f}      {r[lossy]:6.2f}")
    bd = result["bd_rate_vs_jpeg_percent"]
    print(f"BD-rate vs JPEG: {'n/a (curves do not overlap)' if bd is None else f'{bd:+.1f} %'}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
