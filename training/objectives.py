"""Training objectives shared by the trainers (tensors only: no model or data imports)."""

from __future__ import annotations

import torch


def rd_terms(out: dict, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Loss and logs of one batch. A model with a learned entropy model (``likelihoods`` in its output)
    trains on the rate-distortion loss lambda * 255^2 * MSE + bits per pixel, each sample's lambda from its
    quality level; any other on MSE. Logs: bpp (estimated from the likelihoods) and PSNR of the batch."""
    mse = (out["x_hat"].float() - x.float()).square().mean(dim=(1, 2, 3))
    logs = {"psnr": (10 * torch.log10(1 / mse.detach().clamp_min(1e-10))).mean().item()}
    if "likelihoods" not in out:
        return mse.mean(), logs
    bpp = -torch.log2(out["likelihoods"]).sum(dim=(1, 2, 3)) / (x.shape[-2] * x.shape[-1])
    logs["bpp"] = bpp.detach().mean().item()
    return (out["lmbda"] * 255.0 ** 2 * mse + bpp).mean(), logs
