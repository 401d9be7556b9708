"""What evaluate.py writes: results.json (valid JSON, no NaN), results.md, and the PNG plots.

- ``quality_vs_loss.png``: PSNR, SSIM, fresh frames (and accuracy) vs loss rate, one line per method;
- ``rd_curve.png``: PSNR and SSIM vs payload bytes/frame at 0 % loss (ours per quantiser bits, JPEG
  and WebP over their quality range, H.264 over CRF) with the matched operating points of the run;
- ``strip.png``: a few frames at (about) 30 % loss: original, then the registry's strip methods
  (ours | ours+convlstm | JPEG | H.264).

Every method's plot style comes from its entry in :mod:`evaluation.methods`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from evaluation import methods
from utils import plots  # sets the Agg backend
from utils.plots import plt

TIMING_FIELDS = ("encode_ms", "decode_ms")


def clean(obj, digits: int = 6):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, floats rounded to ``digits`` decimals."""
    if isinstance(obj, dict):
        return {str(k): clean(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v, digits) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else round(float(obj), digits)
    if isinstance(obj, torch.Tensor):
        return clean(obj.tolist(), digits)
    return obj


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(clean(payload), indent=1, allow_nan=False) + "\n")


def _fmt(v, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def markdown(payload: dict) -> str:
    """results.md: the run's settings, then one table row per method and loss rate."""
    cfg = payload["config"]
    lines = [f"# Evaluation: {cfg['model']} on {cfg['frames']} frames ({cfg['split']} split of "
             f"{' '.join(cfg['data'])}), {cfg['size']}x{cfg['size']}", "",
             f"Loss model `{cfg['loss']}`, seed {cfg['seed']}, packets of <= {cfg['packet_payload']} B payload; "
             f"our payload {cfg['target_bytes']:.0f} B/frame in {cfg['our_packets']} packets is the baselines' "
             "byte budget. Bytes are payload bytes sent per frame (headers not counted); PSNR/SSIM on the "
             "displayed 8-bit frames; *fresh* = share of frames showing their own decode; ms per frame.", "",
             "| method | loss % | bytes/frame | packets | bpp | PSNR dB | SSIM | MS-SSIM | SSIM dB | fresh | "
             "accuracy | head acc | enc ms | dec ms | settings |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in payload["results"]:
        settings = ", ".join(f"{k}={v}" for k, v in r.get("params", {}).items()
                             if k in ("quality", "crf", "bits", "fec", "over_budget"))
        lines.append(f"| {r['method']} | {100 * r['loss_rate']:g} | {_fmt(r['bytes_per_frame'], '.0f')} | "
                     f"{_fmt(r['packets_per_frame'], '.1f')} | {_fmt(r['bpp'], '.3f')} | {_fmt(r['psnr'])} | "
                     f"{_fmt(r['ssim'], '.4f')} | {_fmt(r['ms_ssim'], '.4f')} | {_fmt(r['ssim_db'])} | "
                     f"{_fmt(r['fresh_frames'], '.2f')} | {_fmt(r['accuracy'], '.3f')} | "
                     f"{_fmt(r.get('head_accuracy'), '.3f')} | {_fmt(r['encode_ms'])} | "
                     f"{_fmt(r['decode_ms'])} | {settings} |")
    return "\n".join(lines) + "\n"


def _by_method(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["method"], []).append(r)
    return out


def plot_quality(rows: list[dict], path: Path, title: str) -> None:
    """Quality, fresh frames and accuracy vs loss rate, one line per method."""
    panels = [("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("fresh_frames", "fresh frames")]
    if any(r["accuracy"] is not None or r.get("head_accuracy") is not None for r in rows):
        panels.append(("accuracy", "accuracy"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for method, rs in _by_method(rows).items():
        colour, marker, ls = methods.style(method)
        for ax, (key, label) in zip(axes[0], panels):
            lines = [(key, ls, method)] + ([("head_accuracy", ":", f"{method} (head)")] if key == "accuracy" else [])
            for k, style, name in lines:
                pts = [(100 * r["loss_rate"], r.get(k)) for r in rs if r.get(k) is not None]
                if pts:
                    ax.plot(*zip(*pts), color=colour, marker=marker, ls=style, ms=4, label=name)
            ax.set(xlabel="packet loss (%)", ylabel=label)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rd(points: list[dict], rows: list[dict], path: Path, title: str) -> None:
    """PSNR / SSIM vs payload bytes per frame at 0 % loss; curves from ``points``, run points from ``rows``."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, rs in _by_method(points).items():
        colour, marker, _ = methods.style(method)
        rs = sorted(rs, key=lambda r: r["bytes_per_frame"])
        for ax, key in zip(axes, ("psnr", "ssim")):
            ax.plot([r["bytes_per_frame"] for r in rs], [r[key] for r in rs], color=colour, marker=marker,
                    ms=3, lw=1, label=method)
    for method, rs in _by_method([r for r in rows if r["loss_rate"] == 0 and r["psnr"] is not None]).items():
        colour, marker, _ = methods.style(method)
        for ax, key in zip(axes, ("psnr", "ssim")):
            ax.scatter([r["bytes_per_frame"] for r in rs], [r[key] for r in rs], s=60, facecolors="none",
                       edgecolors=colour, label=f"{method} (this run)")
    for ax, label in zip(axes, ("PSNR (dB)", "SSIM")):
        ax.set(xlabel="payload bytes per frame", ylabel=label, xscale="log")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_strip(strip: dict, path: Path, count: int = 4) -> None:
    """A few evenly spaced frames, one row each: original then each method at the strip's loss rate."""
    reference = strip["reference"]
    shown = [m for m in methods.strip_methods() if m in strip["frames"]]
    n = len(reference)
    picks = sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(min(count, n))})
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0  # noqa: E731
    rows = [[to_t(reference[f])] + [to_t(strip["frames"][m][f]) for m in shown] for f in picks]
    pct = f"{100 * strip['rate']:g} % loss"
    plots.image_grid(rows, ["original"] + [f"{m} ({pct})" for m in shown], path)


def write_all(out: Path, payload: dict, strip: dict) -> None:
    """results.json, results.md and the three plots (the RD points are ``payload["rd"]``)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", payload)
    (out / "results.md").write_text(markdown(clean(payload)))
    cfg = payload["config"]
    rows = clean(payload["results"])
    title = f"{cfg['model']}, {cfg['loss']} loss, {cfg['frames']} frames at {cfg['size']}px"
    plot_quality(rows, out / "quality_vs_loss.png", title)
    plot_rd(clean(payload["rd"]), rows, out / "rd_curve.png", f"{title}: 0 % loss")
    plot_strip(strip, out / "strip.png")
