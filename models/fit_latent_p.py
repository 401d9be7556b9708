"""Fit LRAE_RD_P's residual priors (models/latent_p.py) on clips and write its checkpoint: the intra codec's
weights and tables as given, the P priors and their tables. The intra codec is not changed, so this is the
whole of "training" a P codec over it: the residuals of I P P ... chains with nothing lost, per quality
level, each channel's histogram fitted by maximum likelihood.

    python -m models.fit_latent_p --intra checkpoints/LRAE_RD.pth --data ../shared/data/video \\
        --hold-out vp8tv_icehockey_cif --frames 100 --out checkpoints/LRAE_RD_P.pth
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from codec.entropy import table_from_counts
from codec.learned import pack_tables
from data import FrameDataset, load_videos
from models.latent_p import LRAE_RD_P
from models.rd_tables import learned_codec
from models.registry import build_model, load_model
from utils.checkpoint import make_checkpoint, save_checkpoint

MAX_HALF = 127  # a table holds at most 255 symbols (codec/learned.py)

@torch.no_grad()
def residuals(model: LRAE_RD_P, clips: list[torch.Tensor], level: int) -> torch.Tensor:
    """The P-frame residuals (N,C,h,w) of ``clips`` ((T,3,H,W) each) coded I P P ... at ``level``, nothing lost."""
    out = []
    for x in clips:
        q = torch.full((len(x),), level, dtype=torch.long)
        y = model.intra.encode(x, q)
        latent = torch.round(y[:1])
        for t in range(1, len(x)):
            z = torch.round(model.residual(y[t:t + 1], latent))
            latent = latent + z
            out.append(z)
    return torch.cat(out)


def fit_priors(model: LRAE_RD_P, clips: list[torch.Tensor], steps: int, lr: float) -> list[float]:
    """Fit each level's prior to the residuals of ``clips`` by maximum likelihood (on each channel's
    histogram of residual values: exact, and fast); returns the bits per residual symbol per level."""
    bits = []
    for level, prior in enumerate(model.priors):
        r = residuals(model, clips, level).transpose(0, 1).reshape(model.latent_channels, -1)  # (C, N)
        values = torch.arange(int(r.min()), int(r.max()) + 1, dtype=torch.float32)
        counts = torch.stack([(r == v).sum(dim=1) for v in values], dim=1).float()  # (C, V)
        weights = counts / counts.sum(dim=1, keepdim=True)
        grid = values[None, :, None].expand(1, -1, model.latent_channels).transpose(1, 2)  # (1, C, V)
        opt = torch.optim.Adam(prior.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss = -(weights * torch.log2(prior.likelihood(grid)[0].clamp_min(1e-9))).sum(dim=1).mean()
            loss.backward()
            opt.step()
        bits.append(float(loss.detach()))
    return bits


def residual_codec(model: LRAE_RD_P, intra_codec: dict, scale: int = 1 << 20) -> dict:
    """The ``ckpt["extra"]["p_codec"]`` entry: per level and channel a range-coder table over the residuals
    -h..h, h = the size of the intra codec's table for that channel (at most 127), so any change between
    two values the intra codec can send - a catch-up after a loss, a scene cut - is sent whole rather than
    clamped (a rare large residual costs up to 24 bits); the weights are the fitted prior's."""
    sizes = intra_codec["learned_sizes"]
    tables, offsets = [], []
    for q, prior in enumerate(model.priors):
        with torch.no_grad():
            pmf = prior.pmf(-MAX_HALF, MAX_HALF).double().cpu().numpy()  # (C, 2 * MAX_HALF + 1)
        row, offs = [], []
        for c in range(model.latent_channels):
            h = min(MAX_HALF, int(sizes[q, c]))
            counts = np.rint(pmf[c, MAX_HALF - h:MAX_HALF + h + 1] * scale).astype(np.int64)
            row.append(table_from_counts(counts))
            offs.append(-h)
        tables.append(row)
        offsets.append(np.asarray(offs, dtype=np.int64))
    return pack_tables(tables, offsets)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Fit LRAE_RD_P's residual priors on clips; write its checkpoint "
                                "(the intra codec's weights and tables, the P priors and their tables).")
    p.add_argument("--intra", required=True, help="the intra codec's checkpoint (an LRAE_RD with its tables)")
    p.add_argument("--data", nargs="+", required=True, help="clips (files or folders, as the trainers' --data)")
    p.add_argument("--hold-out", nargs="*", default=[], help="names of clips not to fit on (test clips)")
    p.add_argument("--deadzone", type=float, default=0.5,
                   help="LRAE_RD_P's dead zone: a latent change smaller than this is sent as 0 (0.5: plain rounding)")
    p.add_argument("--size", type=int, default=224, help="frame side the clips are resized to")
    p.add_argument("--frames", type=int, default=60, help="frames per clip (from the start)")
    p.add_argument("--steps", type=int, default=2000, help="Adam steps per level")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the checkpoint to write")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    intra = load_model(args.intra)
    if intra.kind != "frame" or getattr(intra, "levels", 0) < 2:
        raise SystemExit(f"error: --intra {args.intra} holds a {intra.model_name}, not a codec with quality levels")
    try:
        model = build_model("LRAE_RD_P", intra=intra.model_name, intra_kwargs=intra.config, deadzone=args.deadzone)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    model.intra.load_state_dict(intra.state_dict())
    model.eval()
    loaded = load_videos(args.data, args.size, args.seed, args.frames).videos
    videos = [v for v in loaded if v.name not in args.hold_out and v.num_frames >= 2]  # photos have no residuals
    if not videos:
        raise SystemExit("error: no clips of two or more frames left to fit on (check --data and --hold-out)")
    clips = []
    for v in videos:
        ds = FrameDataset([v], crop=args.size)
        clips.append(torch.stack([ds[t]["x"] for t in range(min(args.frames, len(ds)))]))
    torch.manual_seed(args.seed)
    bits = fit_priors(model, clips, args.steps, args.lr)
    intra_codec = learned_codec(model.intra)
    extra = {"codec": intra_codec, "p_codec": residual_codec(model, intra_codec),
             "fit": {"clips": [v.name for v in videos], "frames": sum(len(c) for c in clips),
                     "bits_per_symbol": bits, "args": json.dumps(vars(args))}}
    save_checkpoint(args.out, make_checkpoint(model, extra=extra))
    print(f"fitted on {len(videos)} clips ({extra['fit']['frames']} frames); bits per residual symbol by level: "
          + " ".join(f"{b:.3f}" for b in bits) + f"\nwrote {args.out}")
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
