"""Latent quantisation: per-channel uniform scalar quantisers, the straight-through estimator, calibration.

Channel c of a latent is quantised with ``bits`` bits over its range [lo_c, hi_c]::

    L      = 2**bits                                   (alphabet 0..L-1)
    step_c = (hi_c - lo_c) / (L - 1)                   (1 when hi_c == lo_c)
    q      = round((clamp(z, lo_c, hi_c) - lo_c) / step_c)
    z_hat  = lo_c + q * step_c

The ends are reconstruction points, so a ReLU latent (lo = 0) keeps exact zeros. The same formula
runs in training (:func:`fake_quantize`, straight-through), on the sender (:func:`quantize`) and on
the receiver (:func:`dequantize`), so what the decoder saw in fine-tuning is what arrives.

Ranges come from one of two places (see codec/packetize.py):

- **calibrated** (preferred): :func:`calibrate` runs the encoder over training batches and returns
  static per-channel ranges (robust quantiles) and per-channel symbol counts, stored by the training
  script in ``ckpt["extra"]["codec"]``; the counts become the entropy coder's integer tables.
- **per frame** (fallback for any checkpoint): each channel's min/max of the current frame
  (:func:`frame_ranges`), carried in the packet as float32.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

DEFAULT_BITS = 4  # measured: the one setting with <= 6 KB/frame for LRAE_VC (benchmarks/bench_quant.py)
MIN_BITS, MAX_BITS = 2, 8  # symbols fit one byte; the entropy tables stay small
CALIBRATION_VERSION = 1


def check_bits(bits: int) -> int:
    if not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"quantisation bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    return bits


def _expand(r, z: torch.Tensor) -> torch.Tensor:
    """Ranges (C,) or (..., C) -> broadcastable against z (..., C, h, w)."""
    r = torch.as_tensor(r, dtype=z.dtype, device=z.device)
    return r.reshape(-1, 1, 1) if r.dim() == 1 else r[..., None, None]


def _grid(z: torch.Tensor, bits: int, lo, hi) -> tuple[torch.Tensor, torch.Tensor, int]:
    levels = (1 << check_bits(bits)) - 1
    lo, hi = _expand(lo, z), _expand(hi, z)
    step = (hi - lo) / levels
    step = torch.where(step > 0, step, torch.ones_like(step))
    return lo, step, levels


def quantize(z: torch.Tensor, bits: int, lo, hi) -> torch.Tensor:
    """Symbols (int64, same shape as z) in 0..2**bits-1. z: (..., C, h, w); lo/hi: (C,) or (..., C)."""
    lo_, step, levels = _grid(z, bits, lo, hi)
    q = torch.round((z - lo_) / step)
    return q.clamp_(0, levels).to(torch.int64)


def dequantize(q: torch.Tensor, bits: int, lo, hi, dtype=torch.float32) -> torch.Tensor:
    """Reconstruction points lo + q * step for symbols q (any integer dtype)."""
    qf = q.to(dtype)
    lo_, step, _ = _grid(qf, bits, lo, hi)
    return lo_ + qf * step


def fake_quantize(z: torch.Tensor, bits: int, lo, hi) -> torch.Tensor:
    """Quantise-dequantise with a straight-through gradient (training).

    Forward: exactly ``dequantize(quantize(z))``. Backward: identity inside [lo, hi], zero outside
    (the clamp's gradient), as in PyTorch's fake_quantize ops. z: (..., C, h, w) (frames or clips);
    lo/hi: (C,) or (..., C) tensors.
    """
    lo_e, hi_e = _expand(lo, z), _expand(hi, z)
    inside = ((z >= lo_e) & (z <= hi_e)).to(z.dtype).detach()  # gradient 1 on [lo, hi], 0 outside
    zq = dequantize(quantize(z.detach(), bits, lo, hi), bits, lo, hi, dtype=z.dtype)
    return zq + (z - z.detach()) * inside


def frame_ranges(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame, per-channel min and max of z (..., C, h, w) -> two (..., C) float32 tensors (no gradient)."""
    flat = z.detach().flatten(-2).float()
    return flat.amin(dim=-1), flat.amax(dim=-1)


def straight_through_quantizer(bits: int, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None):
    """A callable ``q(z) -> z_hat`` for fine-tuning through quantisation (``--quantize BITS``).

    With ``lo``/``hi`` (C,) it uses those static ranges (the calibrated wire mode); without, each
    frame's per-channel min/max (the per-frame wire mode). Gradients pass straight through.
    z: (B,C,h,w) frames or (B,T,C,h,w) clips.
    """
    check_bits(bits)

    def quantizer(z: torch.Tensor) -> torch.Tensor:
        if lo is None or hi is None:
            flo, fhi = frame_ranges(z)
            return fake_quantize(z, bits, flo.to(z.dtype), fhi.to(z.dtype))
        return fake_quantize(z, bits, lo.to(z.device), hi.to(z.device))

    quantizer.bits = bits
    return quantizer


def training_quantizer(bits: int, init_ckpt: dict | None = None):
    """The fake quantiser of the training scripts' ``--quantize BITS`` (None when 0): the calibrated
    ranges of the initial weights when they were calibrated for these bits (what the wire will use),
    else per-frame ranges."""
    if not bits:
        return None
    cal = ((init_ckpt or {}).get("extra") or {}).get("codec")
    if cal and int(cal["bits"]) == bits:
        return straight_through_quantizer(bits, cal["lo"], cal["hi"])
    return straight_through_quantizer(bits)


@torch.no_grad()
def calibrate(model, batches: Iterable[torch.Tensor], bits: int = DEFAULT_BITS, clip: float = 1e-4,
              max_frames: int = 512, seed: int = 0) -> dict[str, torch.Tensor]:
    """Static per-channel ranges and symbol counts from training data, for ``ckpt["extra"]["codec"]``.

    batches: iterable of (B,3,H,W) float tensors in [0,1] (or dicts with an "x" entry); at most
    ``max_frames`` latents are kept (a seeded reservoir sample, so memory stays bounded).
    Ranges are each channel's ``clip`` and ``1 - clip`` quantiles (``clip=0``: min/max; lo = 0 for
    a non-negative latent, so ReLU zeros stay exact). Counts are histograms of the coded symbols -
    the row-DPCM residuals of the quantised channels (codec/entropy.to_residuals).
    Returns plain tensors: ``bits`` (int64 scalar), ``lo``/``hi`` (C,) float32, ``counts`` (C, 2**bits)
    int64 with every count >= 1 (so every symbol stays encodable), ``version``.
    """
    from codec.entropy import to_residuals  # numpy-side; keeps this module light for training

    check_bits(bits)
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    kept: list[torch.Tensor] = []
    seen = 0
    try:
        for batch in batches:
            x = batch["x"] if isinstance(batch, dict) else batch
            for z in model.encode(x.to(device)).float().cpu():
                seen += 1
                if len(kept) < max_frames:
                    kept.append(z)
                else:
                    j = int(torch.randint(0, seen, (1,), generator=g))
                    if j < max_frames:
                        kept[j] = z
    finally:
        model.train(was_training)
    if not kept:
        raise ValueError("calibrate() got no batches")
    latents = torch.stack(kept)  # (N, C, h, w)
    values = latents.transpose(0, 1).flatten(1)  # (C, N*h*w)
    if values.shape[1] > 1 << 20:  # torch.quantile's input limit; a seeded subsample is plenty
        values = values[:, torch.randperm(values.shape[1], generator=g)[:1 << 20]]
    if clip > 0:
        lo, hi = torch.quantile(values, clip, dim=1), torch.quantile(values, 1.0 - clip, dim=1)
    else:
        lo, hi = values.amin(dim=1), values.amax(dim=1)
    if bool((values >= 0).all()):
        lo = torch.zeros_like(lo)
    hi = torch.maximum(hi, lo + 1e-6)
    levels = 1 << bits
    res = to_residuals(quantize(latents, bits, lo, hi).numpy(), levels)  # (N, C, h, w)
    counts = torch.stack([torch.from_numpy(np.bincount(res[:, c].reshape(-1), minlength=levels))
                          for c in range(res.shape[1])]) + 1
    return {"version": torch.tensor(CALIBRATION_VERSION), "bits": torch.tensor(bits),
            "lo": lo.float().contiguous(), "hi": hi.float().contiguous(), "counts": counts}
