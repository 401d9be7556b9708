"""Quality of a frame autoencoder under explicit, reproducible channel loss.

Used at the end of every epoch (validation at 0/25/50/75 % of channels lost) and at the end of
training (a sweep over channels received, k = 1..C, for tail and random masks). Masks come from
``network.loss.eval_mask`` seeded by (seed, batch index), so two runs see the same masks.
"""

from __future__ import annotations

import torch

from models import has_head
from network.loss import eval_mask
from utils.metrics import psnr, ssim


@torch.no_grad()
def eval_levels(model, loader, mode: str, lost_levels: list[int], device, amp_ctx, seed: int = 0,
                quantizer=None) -> dict[int, dict]:
    """Mean PSNR / SSIM (and accuracy when the model classifies) per number of lost channels."""
    model.eval()
    sums = {k: {"psnr": 0.0, "ssim": 0.0, "correct": 0, "n": 0} for k in lost_levels}
    for b, batch in enumerate(loader):
        x = batch["x"].to(device)
        with amp_ctx:
            z = model.encode(x)
        if quantizer is not None:
            z = quantizer(z)
        for k in lost_levels:
            mask = eval_mask(mode, x.shape[0], z.shape[1], k, seed=seed * 100_003 + b).to(device)
            zm = z * mask[:, :, None, None].to(z.dtype)
            with amp_ctx:
                x_hat = model.decode(zm, mask).float()
            s = sums[k]
            s["psnr"] += psnr(x_hat, x).sum().item()
            s["ssim"] += ssim(x_hat, x).sum().item()
            s["n"] += x.shape[0]
            if has_head(model):
                with amp_ctx:
                    logits = model.classify(zm, mask)
                s["correct"] += (logits.argmax(1).cpu() == batch["label"]).sum().item()
    out = {}
    for k, s in sums.items():
        n = max(s["n"], 1)
        out[k] = {"psnr": s["psnr"] / n, "ssim": s["ssim"] / n}
        if has_head(model):
            out[k]["accuracy"] = s["correct"] / n
    return out


def sweep(model, loader, channels: int, device, amp_ctx, seed: int = 0, modes=("tail", "random")) -> dict:
    """PSNR/SSIM for k = 1..C channels received, per mask mode (the prototype's tail sweep, extended)."""
    results = {}
    for mode in modes:
        levels = list(range(channels - 1, -1, -1))  # lost = C-1 .. 0  <=>  received = 1 .. C
        table = eval_levels(model, loader, mode, levels, device, amp_ctx, seed)
        results[mode] = [{"received": channels - k, "lost": k, **table[k]} for k in levels]
    return {"channels": channels, "seed": seed, "results": results}


@torch.no_grad()
def reconstructions(model, x: torch.Tensor, mode: str, fractions=(1.0, 0.75, 0.5, 0.25), seed: int = 0):
    """Rows [original, decoded at each fraction of channels received] for a few frames."""
    model.eval()
    z = model.encode(x)
    channels = z.shape[1]
    cols = [x]
    for f in fractions:
        lost = channels - max(1, round(f * channels))
        mask = eval_mask(mode, x.shape[0], channels, lost, seed=seed).to(x.device)
        cols.append(model.decode(z * mask[:, :, None, None], mask).float())
    titles = ["original"] + [f"{round(f * channels)}/{channels} received ({mode})" for f in fractions]
    return [[c[i] for c in cols] for i in range(x.shape[0])], titles
