"""LRAE_RD: a rate-distortion trained, variable-rate, loss-resilient frame codec.

What it adds to LRAE_VC: a rate term and a learned entropy model, and one model for every bitrate.

- **Transform**: LRAE_VC's (models/lrae.py: stride 8, residual blocks at 1/8 resolution, sub-pixel
  upsampling, so it decodes in a few milliseconds on a CPU), with more latent channels (32 by default) and
  optionally ``tail_blocks`` residual blocks at 1/4 resolution before the last upsampling (the shipped
  model has two: its decoder's last stage made each 4x4 pixel block from one 3x3 conv, which capped quality).
- **Rate**: each latent channel c has a learned density (models/prior.py, the factorized prior of
  Ballé et al., ICLR 2018); training minimises ``lambda * 255^2 * MSE + bits per pixel`` with additive
  uniform noise for the rate and straight-through rounding for the decoder. The coder's integer tables
  come from the same prior (models/rd_tables.py).
- **Variable rate** (Cui et al., CVPR 2021, "Asymmetric Gained Deep Image Compression"): quality
  level q scales the latent by a learned gain vector before rounding (coarser or finer bins per
  channel) and the decoder undoes it with a learned inverse gain; each level has its own lambda
  and its own prior. The level travels with the frame (the wire header's quality byte).
- **Loss resilience**, as LRAE_VC: trained with channel dropout (tail, random, burst), the decoder
  sees the mask (1 = received) beside the latent, so a lost channel is never mistaken for zeros.
  Channels are coded independently, so a lost packet costs its channels and nothing else.

x: (B,3,H,W) in [0,1], sides multiples of 8 -> y: (B,M,H/8,W/8) -> x_hat: (B,3,H,W) in [0,1].
At 224x224 and M = 32: a 32 x 28 x 28 latent.
"""

from __future__ import annotations

import torch
from torch import nn

from models.base import FrameCodec
from models.lrae import transforms
from models.prior import FactorizedPrior
from models.registry import register_model
from network.loss import apply_mask

# lambda of the lowest and highest quality level, for 255^2 * MSE on [0,1] images; the levels between are
# spaced geometrically. CompressAI's MSE ladder (its levels 1 and 7, 0.0018 and 0.0932: about 0.1 and 1.2 bpp
# on Kodak) gave this model 0.24-0.95 bpp at 224x224, so the shipped model widens it (checkpoints/MANIFEST.md).
LAMBDA_RANGE = (0.0009, 0.11)


def default_lambdas(levels: int) -> tuple[float, ...]:
    lo, hi = LAMBDA_RANGE
    if levels == 1:
        return (hi,)
    return tuple(round(lo * (hi / lo) ** (i / (levels - 1)), 6) for i in range(levels))


def level_likelihood(priors, y: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Probability of each value of y (B,C,...) under the prior of its sample's level q (B,): ``priors[q]``."""
    out = torch.empty(y.shape, device=y.device, dtype=torch.float32)
    for level in q.unique().tolist():
        sel = q == level
        out[sel] = priors[level].likelihood(y[sel])
    return out


class QualityLevels:
    """Quality levels for a model with a learned entropy model (mixed into an ``nn.Module``): per level a
    learned gain and inverse-gain vector over the latent channels and a factorized prior, and the lambda
    the level trains at. LRAE_RD and the P-frame codec (models/pframe.py) share it; the attribute names
    (``log_gain``, ``log_inv_gain``, ``priors``) are the checkpoints' keys."""

    # The priors' CDF networks and the gain vectors learn at this multiple of the transforms' rate: at the
    # transforms' rate (3e-4) the priors stayed near their wide initial density for hundreds of steps,
    # every level paid ~1.3 bpp for all-zero latents and PSNR plateaued (see checkpoints/MANIFEST.md).
    entropy_lr_scale = 10.0

    def init_levels(self, channels: int, levels: int, lambdas: tuple[float, ...] | None) -> None:
        lambdas = tuple(lambdas) if lambdas is not None else default_lambdas(levels)
        if len(lambdas) != levels or levels < 1:
            raise ValueError(f"need one lambda per quality level ({levels}), got {len(lambdas)}")
        self.levels = levels
        self.register_buffer("lambdas", torch.tensor(lambdas, dtype=torch.float32), persistent=False)
        # log2 gains spread over three octaves, level 0 coarsest, learned from there.
        start = torch.linspace(0.0, 3.0, levels)[:, None].expand(levels, channels)
        self.log_gain = nn.Parameter(start.clone())
        self.log_inv_gain = nn.Parameter(-start.clone())
        self.priors = nn.ModuleList(FactorizedPrior(channels) for _ in range(levels))

    def param_groups(self) -> list[dict]:
        entropy = [p for n, p in self.named_parameters() if n.startswith("priors.") or "gain" in n]
        ids = {id(p) for p in entropy}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": rest}, {"params": entropy, "lr_scale": self.entropy_lr_scale}]

    def _quality(self, quality, batch: int, device) -> torch.Tensor:
        q = torch.as_tensor(self.levels - 1 if quality is None else quality, device=device).long()
        q = q.expand(batch) if q.dim() == 0 else q
        if q.shape != (batch,) or bool((q < 0).any()) or bool((q >= self.levels).any()):
            raise ValueError(f"quality must be 0..{self.levels - 1} (one per sample), got {quality!r}")
        return q

    def _gain(self, log_gain: torch.Tensor, q: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return torch.exp2(log_gain[q]).to(like.dtype)[:, :, None, None]

    def train_quality(self, quality, batch: int, device) -> torch.Tensor:
        """``quality`` as a (batch,) tensor; in training mode without one, every sample draws its level
        from torch's (seeded) global generator."""
        if quality is None and self.training:
            quality = torch.randint(0, self.levels, (batch,)).to(device)
        return self._quality(quality, batch, device)

    def scale(self, y: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """The analysis output -> the level's symbols before rounding (float32: bf16 steps are 0.5 at 64)."""
        y = y.float()
        return y * self._gain(self.log_gain, q, y)

    def likelihood(self, y: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Probability of each (noisy or rounded) scaled latent value under its level's prior."""
        return level_likelihood(self.priors, y, q)

    def quantize(self, y: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled latent -> (symbols for the decoder: rounded, straight through; likelihoods for the rate:
        of the noisy latent in training, of the symbols otherwise)."""
        y_hat = y + (torch.round(y) - y).detach()
        noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5) if self.training else y_hat
        return y_hat, self.likelihood(noisy, q)

    def dequantize(self, z: torch.Tensor, quality=None) -> torch.Tensor:
        """Symbols of level ``quality`` -> the level-free latent: rounded (a no-op on integers; straight
        through in training), times the level's inverse gain."""
        q = self._quality(quality, z.shape[0], z.device)
        z = z + (torch.round(z) - z).detach()
        return z * self._gain(self.log_inv_gain, q, z)


@register_model("LRAE_RD", kind="frame")
class LRAE_RD(QualityLevels, FrameCodec):  # noqa: N801 - the project's naming
    """Variable-rate loss-resilient codec: M x H/8 x W/8 latent, ``levels`` quality levels.

    ``encode(x, quality)`` -> y (B,M,h,w), already scaled by the level's gain: round it to get the
    symbols. ``decode(y_hat, mask, quality)`` -> x_hat (y_hat is rounded there if it is not yet).
    ``forward(x, mask, quality=...)`` -> dict with
    x_hat, z (the rounded latent as received), mask, likelihoods (B,M,h,w), quality (B,), lmbda (B,).
    """

    stride = 8

    def __init__(self, latent_channels: int = 32, width: int = 64, blocks: int = 2, up_width: int = 32,
                 levels: int = 6, lambdas: tuple[float, ...] | None = None, tail_blocks: int = 0):
        super().__init__()
        self.latent_channels = latent_channels
        self.encoder, self.decoder = transforms(latent_channels, width, blocks, up_width, tail_blocks)
        self.init_levels(latent_channels, levels, lambdas)  # after the transforms: the parameters' order of v1

    # ------------------------------------------------------------------ codec API
    def encode(self, x: torch.Tensor, quality=None) -> torch.Tensor:
        self.check_size(x.shape[-2], x.shape[-1])
        return self.scale(self.encoder(x), self._quality(quality, x.shape[0], x.device))

    def synthesize(self, latent: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones(latent.shape[:2], device=latent.device, dtype=latent.dtype)
        planes = mask.to(latent.dtype)[:, :, None, None].expand_as(latent)
        return self.decoder(torch.cat([latent * planes, planes], dim=1))

    def decode(self, z: torch.Tensor, mask: torch.Tensor | None = None, quality=None) -> torch.Tensor:
        return self.synthesize(self.dequantize(z, quality), mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, quantizer=None, quality=None) -> dict:
        """Training and evaluation pass. ``quantizer`` is not used: rounding is this model's quantiser
        (noise for the rate term in training, straight-through rounding for the decoder). In training
        mode without ``quality``, every sample draws its level from torch's (seeded) global generator."""
        q = self.train_quality(quality, x.shape[0], x.device)
        y_hat, likelihoods = self.quantize(self.encode(x, q), q)
        if mask is None:
            mask = torch.ones(y_hat.shape[:2], device=y_hat.device, dtype=y_hat.dtype)
        z = apply_mask(y_hat, mask)
        return {"x_hat": self.decode(z, mask, q), "z": z, "mask": mask, "likelihoods": likelihoods,
                "quality": q, "lmbda": self.lambdas[q]}
