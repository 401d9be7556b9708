"""Plots the scripts write (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def loss_curve(records: list[dict], path: Path) -> None:
    """Training loss per step and validation PSNR (mean over loss levels) per epoch."""
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["step"], r["val_mean_psnr"]) for r in records if "val_mean_psnr" in r]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    if train:
        ax[0].plot(*zip(*train), lw=1)
    ax[0].set(xlabel="step", ylabel="training loss", yscale="log", title="training loss")
    if val:
        ax[1].plot(*zip(*val), marker="o")
    ax[1].set(xlabel="step", ylabel="PSNR (dB)", title="validation PSNR (mean over loss levels)")
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep_plot(sweep: dict, path: Path, title: str) -> None:
    """PSNR and SSIM vs channels received, one line per mask mode."""
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for mode, rows in sweep["results"].items():
        k = [r["received"] for r in rows]
        ax[0].plot(k, [r["psnr"] for r in rows], marker=".", label=mode)
        ax[1].plot(k, [r["ssim"] for r in rows], marker=".", label=mode)
    ax[0].set(xlabel="channels received", ylabel="PSNR (dB)", title=title)
    ax[1].set(xlabel="channels received", ylabel="SSIM")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rd_levels_plot(result: dict, path: Path, title: str) -> None:
    """PSNR vs coded bits per pixel: each quality level (all channels and under channel loss) against JPEG."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    h, w = result["size"]
    jpeg = result["jpeg"]
    ax.plot([j["bytes"] * 8 / (h * w) for j in jpeg], [j["psnr"] for j in jpeg], "s-", color="grey", label="JPEG")
    levels = result["levels"]
    ax.plot([r["bpp_coded"] for r in levels], [r["psnr"] for r in levels], "o-", label="LRAE_RD, all channels")
    lossy = next(k for k in levels[0] if k.startswith("psnr_loss_"))
    ax.plot([r["received_bytes_under_loss"] * 8 / (h * w) for r in levels], [r[lossy] for r in levels], "o--",
            label=f"LRAE_RD, {float(lossy.rsplit('_', 1)[1]):.0%} channels lost (bytes received)")
    ax.set_xlabel("bits per pixel (coded)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def image_grid(rows: list[list[torch.Tensor]], titles: list[str], path: Path) -> None:
    """Rows of (3,H,W) images in [0,1], one column per title."""
    n_rows, n_cols = len(rows), len(titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.2 * n_cols, 2.2 * n_rows), squeeze=False)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            axes[i][j].imshow(np.clip(img.float().permute(1, 2, 0).cpu().numpy(), 0, 1))
            axes[i][j].axis("off")
            if i == 0:
                axes[i][j].set_title(titles[j], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
