"""LRAE_RD: a rate-distortion trained, variable-rate, loss-resilient frame codec.

What it adds to LRAE_VC: a rate term and a learned entropy model, and one model for every bitrate.

- **Transform** (Ballé et al., ICLR 2017/2018): four stride-2 3x3 convolutions with GDN, so the
  latent is M x H/16 x W/16; the decoder mirrors it with sub-pixel convolutions (Shi et al. 2016)
  and inverse GDN, so no wide convolution runs at full resolution (real time on a CPU).
- **Rate**: each latent channel c has a learned density (models/prior.py, the factorized prior);
  training minimises ``lambda * 255^2 * MSE + bits per pixel`` with additive uniform noise for the
  rate and straight-through rounding for the decoder. The coder's tables come from the same prior.
- **Variable rate** (Cui et al., CVPR 2021, "Asymmetric Gained Deep Image Compression"): quality
  level q scales the latent by a learned gain vector before rounding (coarser or finer bins per
  channel) and the decoder undoes it with a learned inverse gain; each level has its own lambda
  and its own prior. The level travels with the frame.
- **Loss resilience**, as LRAE_VC: trained with channel dropout (tail, random, burst), the decoder
  sees the mask (1 = received) beside the latent, so a lost channel is never mistaken for zeros.
  Channels are coded independently, so a lost packet costs its channels and nothing else.

x: (B,3,H,W) in [0,1], sides multiples of 16 -> y: (B,M,H/16,W/16) -> x_hat: (B,3,H,W) in [0,1].
At 224x224 and M = 64: a 64 x 14 x 14 latent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.base import FrameCodec
from models.prior import FactorizedPrior
from models.registry import register_model
from network.loss import apply_mask

# lambda per quality level, for 255^2 * MSE on [0,1] images (CompressAI's MSE ladder, levels 1..8)
LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)


class GDN(nn.Module):
    """Generalised divisive normalisation (Ballé et al., ICLR 2016): x / sqrt(beta + gamma * x^2), or
    its inverse (multiply) for the decoder. beta and gamma stay positive by a squared reparametrisation."""

    def __init__(self, channels: int, inverse: bool = False, pedestal: float = 2 ** -18):
        super().__init__()
        self.inverse, self.pedestal = inverse, pedestal
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + pedestal))
        self.gamma = nn.Parameter(torch.sqrt(0.1 * torch.eye(channels) + pedestal))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta.square() - self.pedestal
        gamma = (self.gamma.square() - self.pedestal).clamp_min(0.0)
        norm = F.conv2d(x * x, gamma[:, :, None, None], beta.clamp_min(1e-6))
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


def conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1)


def up(cin: int, cout: int) -> nn.Sequential:
    """x2 sub-pixel upsampling: a 3x3 conv at the low resolution, then PixelShuffle."""
    return nn.Sequential(conv(cin, 4 * cout), nn.PixelShuffle(2))


@register_model("LRAE_RD", kind="frame")
class LRAE_RD(FrameCodec):  # noqa: N801 - the project's naming
    """Variable-rate loss-resilient codec: M x H/16 x W/16 latent, ``levels`` quality levels.

    ``encode(x, quality)`` -> y (B,M,h,w), already scaled by the level's gain: round it to get the
    symbols. ``decode(y_hat, mask, quality)`` -> x_hat (y_hat is rounded there if it is not yet).
    ``forward(x, mask, quality=...)`` -> dict with
    x_hat, z (the rounded latent as received), mask, likelihoods (B,M,h,w), quality (B,), lmbda (B,).
    """

    stride = 16
    # The priors' CDF networks and the gain vectors learn at this multiple of the transforms' rate: at the
    # transforms' rate (3e-4) the priors stayed near their wide initial density for hundreds of steps,
    # every level paid ~1.3 bpp for all-zero latents and PSNR plateaued (see checkpoints/MANIFEST.md).
    entropy_lr_scale = 10.0

    def __init__(self, latent_channels: int = 64, width: int = 96, levels: int = 6,
                 lambdas: tuple[float, ...] | None = None):
        super().__init__()
        lambdas = tuple(lambdas) if lambdas is not None else LAMBDAS[:levels]
        if len(lambdas) != levels or levels < 1:
            raise ValueError(f"need one lambda per quality level ({levels}), got {len(lambdas)}")
        self.latent_channels, self.levels = latent_channels, levels
        self.register_buffer("lambdas", torch.tensor(lambdas, dtype=torch.float32), persistent=False)
        n, m = width, latent_channels
        self.encoder = nn.Sequential(conv(3, n, 2), GDN(n), conv(n, n, 2), GDN(n), conv(n, n, 2), GDN(n),
                                     conv(n, m, 2))
        self.decoder = nn.Sequential(conv(2 * m, n), GDN(n, inverse=True), up(n, n), GDN(n, inverse=True),
                                     up(n, n), GDN(n, inverse=True), up(n, n // 2), nn.LeakyReLU(0.1, inplace=True),
                                     up(n // 2, 3))
        # log2 gains spread over three octaves, level 0 coarsest, learned from there. They start at 1..8:
        # the encoder's initial outputs are ~0.1-0.6, and with gains 0.25..2 nearly every symbol rounded
        # to 0, so the decoder saw nothing (16.0 vs 15.1 dB after 100 steps of a short diagnostic run).
        start = torch.linspace(0.0, 3.0, levels)[:, None].expand(levels, m)
        self.log_gain = nn.Parameter(start.clone())
        self.log_inv_gain = nn.Parameter(-start.clone())
        self.priors = nn.ModuleList(FactorizedPrior(m) for _ in range(levels))

    def param_groups(self) -> list[dict]:
        entropy = [p for n, p in self.named_parameters() if n.startswith("priors.") or "gain" in n]
        ids = {id(p) for p in entropy}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": rest}, {"params": entropy, "lr_scale": self.entropy_lr_scale}]

    # ------------------------------------------------------------------ helpers
    def _quality(self, quality, batch: int, device) -> torch.Tensor:
        q = torch.as_tensor(self.levels - 1 if quality is None else quality, device=device).long()
        q = q.expand(batch) if q.dim() == 0 else q
        if q.shape != (batch,) or bool((q < 0).any()) or bool((q >= self.levels).any()):
            raise ValueError(f"quality must be 0..{self.levels - 1} (one per sample), got {quality!r}")
        return q

    def _gain(self, log_gain: torch.Tensor, q: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return torch.exp2(log_gain[q]).to(like.dtype)[:, :, None, None]

    def likelihood(self, y: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Probability of each (noisy or rounded) scaled latent value under its level's prior."""
        out = torch.empty(y.shape, device=y.device, dtype=torch.float32)
        for level in q.unique().tolist():
            sel = q == level
            out[sel] = self.priors[level].likelihood(y[sel])
        return out

    # ------------------------------------------------------------------ codec API
    def encode(self, x: torch.Tensor, quality=None) -> torch.Tensor:
        self.check_size(x.shape[-2], x.shape[-1])
        q = self._quality(quality, x.shape[0], x.device)
        y = self.encoder(x).float()  # gains, rounding and noise in float32 (bf16 steps are 0.5 at |y| = 64)
        return y * self._gain(self.log_gain, q, y)

    def decode(self, z: torch.Tensor, mask: torch.Tensor | None = None, quality=None) -> torch.Tensor:
        q = self._quality(quality, z.shape[0], z.device)
        if mask is None:
            mask = torch.ones(z.shape[:2], device=z.device, dtype=z.dtype)
        mask = mask.to(z.dtype)
        planes = mask[:, :, None, None].expand_as(z)
        z = z + (torch.round(z) - z).detach()  # the decoder sees symbols, whoever calls it (no-op on integers)
        z = z * self._gain(self.log_inv_gain, q, z)
        return torch.sigmoid(self.decoder(torch.cat([z * planes, planes], dim=1)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, quantizer=None, quality=None) -> dict:
        """Training and evaluation pass. ``quantizer`` is not used: rounding is this model's quantiser
        (noise for the rate term in training, straight-through rounding for the decoder). In training
        mode without ``quality``, every sample draws its level from torch's (seeded) global generator."""
        if quality is None and self.training:
            quality = torch.randint(0, self.levels, (x.shape[0],)).to(x.device)
        q = self._quality(quality, x.shape[0], x.device)
        y = self.encode(x, q)
        y_hat = y + (torch.round(y) - y).detach()
        noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5) if self.training else y_hat
        likelihoods = self.likelihood(noisy, q)
        if mask is None:
            mask = torch.ones(y.shape[:2], device=y.device, dtype=y.dtype)
        z = apply_mask(y_hat, mask)
        return {"x_hat": self.decode(z, mask, q), "z": z, "mask": mask, "likelihoods": likelihoods,
                "quality": q, "lmbda": self.lambdas[q]}
