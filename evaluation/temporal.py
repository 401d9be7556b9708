"""Temporal loss patterns and the evaluation of latent filling over video sequences.

Which frames lose channels (``pattern``), and which channels they lose (``mode``, network.loss):

- ``iid``: every frame is lossy; each draws its own mask (per sample and per frame).
- ``consecutive`` (n): bursts of n lossy frames (n = 1, 3, 5: GRACE's and the prototype's setting),
  each preceded by ``gap`` clean frames: clean x gap, lossy x n, clean x gap, lossy x n, ... The first
  frame is always clean, so a burst starts from a reference (the prototype's t = 0 was always lossy).

The fills (``FILLS``: zero, copy, convlstm) are the receiver's, from playback.conceal (``fill_clip``
runs one over a whole clip; the ConvLSTM as ``model.fill``), all decoded by the same frame decoder.

Evaluation masks are reproducible: frame t of clip i loses the channels of ``eval_mask(mode, 1, C,
lost, seed=frame_seed(frame_seed(seed, i), t))`` (network.loss.frame_seed, the rule of every loss
draw), whatever the pattern and the fill, so
the three fills and the patterns see the same losses. Scores are means over the *lossy* frames of
per-frame PSNR / SSIM (utils.metrics); at 0 lost channels the same frames are scored, clean.
"""

from __future__ import annotations

import hashlib

import torch

from network.loss import apply_mask, consecutive_lossy, eval_mask, frame_seed, sample_masks
from playback.conceal import FILLS, fill_clip
from utils.metrics import psnr, ssim

PATTERNS = ("iid", "consecutive")
TRAIN_PATTERNS = PATTERNS + ("mixed",)
BURSTS = (1, 3, 5)
GAP = 3


def lossy_frames(pattern: str, length: int, n: int = 1, gap: int = GAP, start: int | None = None) -> torch.Tensor:
    """(length,) bool, True = the frame loses channels. ``start`` (consecutive): first lossy frame."""
    if pattern == "iid":
        return torch.ones(length, dtype=torch.bool)
    if pattern != "consecutive":
        raise ValueError(f"unknown temporal pattern {pattern!r}; choose from {', '.join(PATTERNS)}")
    if n < 1 or gap < 1:
        raise ValueError(f"consecutive pattern needs n >= 1 and gap >= 1, got n={n} gap={gap}")
    return torch.tensor([consecutive_lossy(t, n, gap, start) for t in range(length)], dtype=torch.bool)


def training_masks(mode: str, pattern: str, batch: int, length: int, channels: int, max_drop: int,
                   generator: torch.Generator, bursts=BURSTS) -> torch.Tensor:
    """Training masks (batch, length, channels), 1 = received, drawn per sample and per frame.

    Each lossy frame draws its own ``sample_masks(mode, ...)`` mask (so its loss is 0..max_drop
    channels). ``consecutive``: per sample one burst of n ~ U(bursts) lossy frames at a random start
    after the first frame; the other frames arrive whole. ``mixed``: each sample is iid or consecutive
    with probability 1/2 (one model for both regimes). Everything comes from ``generator``.
    """
    if pattern not in TRAIN_PATTERNS:
        raise ValueError(f"unknown temporal pattern {pattern!r}; choose from {', '.join(TRAIN_PATTERNS)}")
    masks = sample_masks(mode, batch * length, channels, max_drop, generator).reshape(batch, length, channels)
    if pattern == "iid":
        return masks
    lossy = torch.zeros(batch, length, dtype=torch.bool)
    choice = torch.randint(0, len(bursts), (batch,), generator=generator)
    u = torch.rand(batch, generator=generator)
    iid = torch.rand(batch, generator=generator) < (0.5 if pattern == "mixed" else 0.0)
    for b in range(batch):
        n = min(bursts[int(choice[b])], max(length - 1, 1))
        first = 1 + int(u[b] * (length - n)) if length > n else 0
        lossy[b, first:first + n] = True
    lossy |= iid[:, None]
    return torch.where(lossy[..., None], masks, torch.ones_like(masks))


def eval_masks(mode: str, lossy: torch.Tensor, channels: int, lost: int, seed: int, clip: int = 0) -> torch.Tensor:
    """Reproducible (T, C) masks: lossy frames lose ``lost`` channels (eval_mask seeded per frame)."""
    base = frame_seed(seed, clip)
    rows = [eval_mask(mode, 1, channels, lost, seed=frame_seed(base, t))[0] if bool(lossy[t])
            else torch.ones(channels) for t in range(len(lossy))]
    return torch.stack(rows)


def apply_fill(fill: str, model, z_sent: torch.Tensor, mask: torch.Tensor):
    """(filled latent, decoder mask) for one fill (playback.conceal.fill_clip, the receiver's fills on a
    whole clip); z_sent (B,T,C,h,w) is the latent before loss, ``model`` the conv_lstm_ae."""
    return fill_clip(fill, apply_mask(z_sent, mask), mask, temporal=model)


def _scores(model, z, mask, x, frames: list[int], amp_ctx, memo: dict, chunk: int = 8):
    """Per-frame (psnr, ssim) lists for the given frame indices of one clip (z (T,C,h,w), x (T,3,H,W)).

    ``memo`` caches scores by the exact (frame, latent, decoder mask): fills and patterns that give a
    frame the same latent (a shared loss history, zero == copy when nothing was ever received) decode it once.
    """
    keys = [(t, hashlib.sha1(z[t].cpu().numpy().tobytes() + mask[t].cpu().numpy().tobytes()).digest())
            for t in frames]
    todo = [i for i, k in enumerate(keys) if k not in memo]
    for i in range(0, len(todo), chunk):
        idx = [frames[j] for j in todo[i:i + chunk]]
        with amp_ctx:
            x_hat = model.decode(z[idx], mask[idx]).float()
        for j, p, s in zip(todo[i:i + chunk], psnr(x_hat, x[idx]).tolist(), ssim(x_hat, x[idx]).tolist()):
            memo[keys[j]] = (p, s)
    return [memo[k][0] for k in keys], [memo[k][1] for k in keys]


@torch.no_grad()
def evaluate(model, clips, *, modes, levels, patterns, fills=FILLS, device, amp_ctx, seed: int = 0,
             gap: int = GAP) -> dict:
    """Quality per (mode, pattern, lost channels, fill) on whole clips (each (T,3,H,W) in [0,1]).

    ``patterns`` is a list of (name, n), e.g. [("iid", 0), ("consecutive", 1)]. Returns
    {"rows": [{mode, pattern, n, lost, fill, psnr, ssim, frames}], "channels", "seed", "gap"}.
    """
    model.eval()
    sums: dict[tuple, list] = {}
    channels = None
    for ci, x in enumerate(clips):
        x = x.to(device)
        with amp_ctx:
            z_sent = model.encode(x[None]).float()  # (1,T,C,h,w)
        length, channels = z_sent.shape[1], z_sent.shape[2]
        memo: dict = {}
        ones = torch.ones(length, channels, device=device)
        clean = _scores(model, z_sent[0], ones, x, list(range(length)), amp_ctx, memo)
        for mode in modes:
            for name, n in patterns:
                lossy = lossy_frames(name, length, n, gap)
                frames = torch.nonzero(lossy).flatten().tolist()
                for lost in levels:
                    mask = eval_masks(mode, lossy, channels, lost, seed, ci).to(device)
                    for fill in fills:
                        if lost == 0:
                            p, s = [clean[0][t] for t in frames], [clean[1][t] for t in frames]
                        else:
                            z, dmask = apply_fill(fill, model, z_sent, mask[None])
                            p, s = _scores(model, z[0], dmask[0], x, frames, amp_ctx, memo)
                        acc = sums.setdefault((mode, name, n, lost, fill), [0.0, 0.0, 0])
                        acc[0] += sum(p)
                        acc[1] += sum(s)
                        acc[2] += len(p)
    rows = [{"mode": k[0], "pattern": k[1], "n": k[2], "lost": k[3], "fill": k[4],
             "psnr": v[0] / max(v[2], 1), "ssim": v[1] / max(v[2], 1), "frames": v[2]} for k, v in sums.items()]
    return {"channels": channels, "seed": seed, "gap": gap, "rows": rows}


def lookup(result: dict, **keys) -> dict:
    """The one row of an evaluate() result matching ``keys`` (e.g. mode="tail", lost=12, fill="zero")."""
    found = [r for r in result["rows"] if all(r[k] == v for k, v in keys.items())]
    if len(found) != 1:
        raise KeyError(f"{len(found)} rows match {keys}")
    return found[0]


def plot(result: dict, path, title: str) -> None:
    """PSNR vs lost channels, one panel per (mode, pattern), one line per fill."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    modes = sorted({r["mode"] for r in rows})
    patterns = sorted({(r["pattern"], r["n"]) for r in rows}, key=lambda p: (p[0] != "iid", p[1]))
    fig, axes = plt.subplots(len(modes), len(patterns), figsize=(3.2 * len(patterns), 2.8 * len(modes)),
                             squeeze=False, sharey=True)
    for i, mode in enumerate(modes):
        for j, (name, n) in enumerate(patterns):
            ax = axes[i][j]
            for fill in FILLS:
                pts = sorted((r["lost"], r["psnr"]) for r in rows
                             if (r["mode"], r["pattern"], r["n"], r["fill"]) == (mode, name, n, fill))
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, label=fill)
            ax.set_title(f"{mode}, {name}" + (f" n={n}" if name == "consecutive" else ""), fontsize=9)
            ax.set_xlabel(f"channels lost (of {result['channels']})")
            ax.grid(alpha=0.3)
        axes[i][0].set_ylabel("PSNR (dB), lossy frames")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
