"""Image quality and rate metrics, per image and batch-friendly.

Every quality metric is computed on what a player shows: 8-bit RGB. Inputs may be

- float tensors in [0, 1], (B,3,H,W) or (3,H,W): clamped and rounded to 8 bit first;
- uint8 tensors, (B,3,H,W) or (3,H,W);
- uint8 numpy arrays in channels-last layout, (B,H,W,3) or (H,W,3) (what the codec baselines return).

Metrics return one value per image, a float64 tensor of shape (B,), so callers average them the
way they report them (e.g. the mean of per-frame PSNR).

- :func:`psnr`: 10·log10(255² / MSE) over all pixels and channels, in dB, **capped at
  ``PSNR_MAX`` = 100 dB** (identical images give exactly 100 dB instead of inf).
- :func:`ssim`, :func:`ms_ssim`: pytorch_msssim with data_range 1 on the 8-bit images / 255
  (the CompressAI and GRACE convention). MS-SSIM needs both sides > 160 px (four 2× down-samplings
  of an 11-tap window); for smaller images :func:`ms_ssim` returns NaN per image rather than a
  value on a different scale.
- :func:`ssim_db`: GRACE's SSIM in dB, -10·log10(1 - SSIM), capped at ``SSIM_DB_MAX`` = 100 dB.
- :func:`bpp`: bits per pixel from real bytes, bytes·8 / (H·W).

Playback and rate-curve metrics (plain numbers, not per image):

- :func:`freeze_runs`, :func:`freeze_ms`: a *freeze* is a maximal run of consecutive non-fresh frames
  (frames that do not show their own decode); it lasts run length × 1000 / fps ms.
- :func:`bd_rate`: the Bjøntegaard delta rate of one rate-PSNR curve against another, in %.
"""

from __future__ import annotations

import math

import numpy as np
import pytorch_msssim
import torch

PSNR_MAX = 100.0
SSIM_DB_MAX = 100.0
MS_SSIM_MIN_SIDE = 161  # pytorch_msssim asserts min(H, W) > (win_size - 1) * 2**4 = 160


def to_uint8(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Any accepted image layout (see module docstring) -> uint8 tensor (B,3,H,W)."""
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise TypeError(f"numpy images must be uint8 (H,W,3) or (B,H,W,3), got {x.dtype}")
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"numpy images must be (H,W,3) or (B,H,W,3), got {x.shape}")
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"tensor images must be (3,H,W) or (B,3,H,W), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise TypeError(f"tensor images must be float in [0,1] or uint8, got {x.dtype}")
    return (x.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def _pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = to_uint8(x), to_uint8(y)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b.to(a.device)


def mse(x, y) -> torch.Tensor:
    """Mean squared error per image on the 0..255 scale: (B,) float64."""
    a, b = _pair(x, y)
    if a.device.type != "cpu":
        d = a.float() - b.float()
        return d.square().flatten(1).sum(dim=1, dtype=torch.float64) / d[0].numel()
    # numpy is several times faster than torch here on CPU; exact (integers, float64 sums)
    d = a.numpy().astype(np.float32) - b.numpy().astype(np.float32)
    return torch.from_numpy(np.einsum("bchw,bchw->b", d, d, dtype=np.float64) / d[0].size)


def psnr(x, y) -> torch.Tensor:
    """PSNR per image in dB on 8-bit RGB: (B,) float64, capped at ``PSNR_MAX`` (identical -> 100)."""
    err = mse(x, y)
    out = 10.0 * torch.log10((255.0**2) / err.clamp_min(1e-300))
    return out.clamp(max=PSNR_MAX)


def _unit_float(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _pair(x, y)
    return a.to(torch.float32) / 255.0, b.to(torch.float32) / 255.0


def ssim(x, y) -> torch.Tensor:
    """SSIM per image (pytorch_msssim, data_range 1, 11-tap Gaussian window): (B,) float64."""
    a, b = _unit_float(x, y)
    return pytorch_msssim.ssim(a, b, data_range=1.0, size_average=False).to(torch.float64)


def ms_ssim(x, y) -> torch.Tensor:
    """MS-SSIM per image (pytorch_msssim, data_range 1): (B,) float64; NaN if min(H, W) <= 160."""
    a, b = _unit_float(x, y)
    if min(a.shape[-2:]) < MS_SSIM_MIN_SIDE:
        return torch.full((a.shape[0],), math.nan, dtype=torch.float64)
    return pytorch_msssim.ms_ssim(a, b, data_range=1.0, size_average=False).to(torch.float64)


def ssim_db(s):
    """SSIM in dB as GRACE reports it: -10·log10(1 - s), capped at ``SSIM_DB_MAX``.

    Accepts a float, numpy array or tensor and returns the same kind.
    """
    if isinstance(s, torch.Tensor):
        return (-10.0 * torch.log10((1.0 - s).clamp_min(1e-300))).clamp(max=SSIM_DB_MAX)
    arr = np.asarray(s, dtype=np.float64)
    with np.errstate(divide="ignore"):
        out = np.minimum(-10.0 * np.log10(np.maximum(1.0 - arr, 1e-300)), SSIM_DB_MAX)
    return float(out) if out.ndim == 0 else out


def bpp(nbytes, height: int, width: int):
    """Bits per pixel of ``nbytes`` real bytes for an H×W image: nbytes·8 / (H·W).

    ``nbytes`` may be a number, numpy array or tensor (e.g. bytes per frame); same kind returned.
    """
    return nbytes * 8.0 / (height * width)


def freeze_runs(fresh) -> np.ndarray:
    """Lengths in frames of the freezes of a playback, in order: maximal runs of False in ``fresh`` (N,)."""
    stale = np.concatenate([[False], ~np.asarray(fresh, bool).reshape(-1), [False]])
    edges = np.flatnonzero(np.diff(stale.astype(np.int8)))  # alternating starts and ends of stale runs
    return (edges[1::2] - edges[0::2]).astype(np.int64)


def freeze_ms(fresh, fps: float = 30.0) -> dict[str, float]:
    """``freeze_ms_total``: the time spent frozen; ``freeze_ms_p95``: the 95th percentile (numpy's linear
    interpolation) of the freeze durations, both in ms at ``fps``; 0 for a playback without a freeze."""
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    ms = freeze_runs(fresh) * (1000.0 / fps)
    return {"freeze_ms_total": float(ms.sum()), "freeze_ms_p95": float(np.percentile(ms, 95)) if len(ms) else 0.0}


def bd_rate(anchor_rate, anchor_psnr, test_rate, test_psnr) -> float | None:
    """Bjøntegaard delta rate (VCEG-M33) of the test curve against the anchor, in %.

    For each curve, log(rate) is fitted as a cubic polynomial of PSNR (least squares; with fewer than
    4 points the degree is the number of points - 1); both fits are integrated over the overlapping
    PSNR range and the mean difference d gives (exp(d) - 1)·100. Negative: the test curve needs fewer
    bits for the same quality (-50: half the rate). Rates in any unit shared by both curves (bytes per
    frame here). Returns None when the PSNR ranges do not overlap, or when a curve is not an RD curve:
    sorted by rate, its PSNR must rise strictly (under loss a larger budget can show less, e.g. JPEG
    frames that need more packets freeze more often, or a frozen stream repeats one PSNR; a fit through
    such points would give numbers like +8000 % or -100 % that mean nothing).
    """
    curves = []
    for rate, quality in ((anchor_rate, anchor_psnr), (test_rate, test_psnr)):
        r, q = np.asarray(rate, np.float64).reshape(-1), np.asarray(quality, np.float64).reshape(-1)
        if len(r) != len(q) or len(r) < 2 or not (np.isfinite(r).all() and np.isfinite(q).all()) or (r <= 0).any():
            raise ValueError(f"a curve needs >= 2 points of finite rate > 0 and PSNR, got {r.tolist()}, {q.tolist()}")
        curves.append((q, r))
    if any((np.diff(q[np.argsort(r, kind="stable")]) <= 0).any() for q, r in curves):
        return None
    lo = max(q.min() for q, _ in curves)
    hi = min(q.max() for q, _ in curves)
    if hi <= lo:
        return None
    curves = [(q, np.polyint(np.polyfit(q, np.log(r), min(3, len(r) - 1)))) for q, r in curves]
    (_, a), (_, b) = curves
    diff = (np.polyval(b, hi) - np.polyval(b, lo) - np.polyval(a, hi) + np.polyval(a, lo)) / (hi - lo)
    return float((math.exp(diff) - 1.0) * 100.0)
