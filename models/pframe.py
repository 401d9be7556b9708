"""LRAE_VC_P: a P-frame codec conditioned on the receiver's own previous reconstruction.

Conditional coding (Li et al., "Deep Contextual Video Compression", NeurIPS 2021), cut down to run on a
CPU: no optical flow. The encoder sees the frame and the reference; the decoder sees the received latent,
its mask (1 = received) and a context computed from the reference alone, and predicts a correction to
the reference. The reference is whatever the receiver showed for the previous frame, so a lost packet
degrades the reference the next frame is decoded against; training unrolls several frames with channel
loss drawn per frame so that the decoder learns to work from a degraded reference the encoder never saw.

- **Context** (reference only, the decoder's side): three stride-2 convolutions and a residual block,
  ``width`` channels at 1/8 resolution, beside the latent; the full-resolution reference itself at the
  last layer.
- **Latent**: M x H/8 x W/8 with LRAE_RD's quality levels (models/rd.py ``QualityLevels``: a gain and
  inverse-gain vector and a factorized prior per level), so each channel is its own packet, coded with
  the learned tables of its level, and decodes from its own bytes.
- **Nothing received** (every channel of a P-frame lost): the decoder sees zeros and an all-zero mask and
  outputs the reference plus the correction it learned for that case (trained with whole-frame loss).
- **I-frames** come from the intra codec inside (``intra``, an LRAE_RD: the same quality levels), so one
  checkpoint holds everything a sender and a receiver need.

x, ref: (B,3,H,W) in [0,1], sides multiples of 8 -> symbols (B,M,H/8,W/8) -> x_hat (B,3,H,W).

    model = build_model("LRAE_VC_P")
    out = model(x, ref, mask, quality=q)     # x_hat, z, mask, likelihoods, quality, lmbda (as LRAE_RD)
    z = torch.round(model.encode(x, ref, q)); x_hat = model.decode(z, ref, mask, q)

Status: the model and its unit tests; the unrolled training, the wire's frame type and reference index,
feedback and evaluation are issue 15's remaining steps.
"""

from __future__ import annotations

import torch
from torch import nn

from models.base import FrameCodec
from models.lrae import ResBlock, conv, upsample
from models.rd import QualityLevels, default_lambdas
from models.registry import build_model, register_model
from network.loss import apply_mask


def context_net(width: int) -> nn.Sequential:
    """ref (B,3,H,W) -> (B,width,H/8,W/8)."""
    act = nn.LeakyReLU(0.1, inplace=True)
    return nn.Sequential(conv(3, 32, stride=2), act, conv(32, width, stride=2), act, conv(width, width, stride=2),
                         act, ResBlock(width))


@register_model("LRAE_VC_P", kind="inter")
class LRAE_VC_P(QualityLevels, nn.Module):  # noqa: N801 - the project's naming
    """P-frame codec: ``encode(x, ref, quality)``, ``decode(z, ref, mask, quality)``, ``forward`` as LRAE_RD's
    with the reference as second input (module docstring)."""

    stride = 8

    def __init__(self, intra: str = "LRAE_RD", intra_kwargs: dict | None = None, latent_channels: int = 32,
                 width: int = 64, blocks: int = 2, up_width: int = 32, lambdas: tuple[float, ...] | None = None):
        super().__init__()
        self.intra = build_model(intra, **(intra_kwargs or {}))
        if self.intra.kind != "frame" or self.intra.levels < 2:
            raise ValueError(f"intra={intra!r} is not a frame codec with quality levels (e.g. LRAE_RD)")
        self.latent_channels = m = latent_channels
        act = nn.LeakyReLU(0.1, inplace=True)
        self.encoder = nn.Sequential(conv(6, 32, stride=2), act, conv(32, width, stride=2), act,
                                     conv(width, width, stride=2), act, ResBlock(width), conv(width, m))
        self.context = context_net(width)
        self.decoder = nn.Sequential(conv(2 * m + width, width), act, *[ResBlock(width) for _ in range(blocks)],
                                     upsample(width, up_width, 2), act, upsample(up_width, 16, 4), act)
        self.out = conv(16 + 3, 3)  # the upsampled features beside the full-resolution reference
        nn.init.zeros_(self.out.weight)  # untrained = show the reference (copy previous), exactly
        nn.init.zeros_(self.out.bias)
        if lambdas is None:  # a quality index means the same for I- and P-frames
            lambdas = self.intra.config.get("lambdas") or default_lambdas(self.intra.levels)
        self.init_levels(m, self.intra.levels, lambdas)

    def param_groups(self) -> list[dict]:
        """The P-frame codec's parameters (the intra codec inside trains on its own, autoencoder_train.py)."""
        groups = super().param_groups()
        intra = {id(p) for p in self.intra.parameters()}
        return [{**g, "params": [p for p in g["params"] if id(p) not in intra]} for g in groups]

    check_size = FrameCodec.check_size  # the frame codecs' rules: sides multiples of the stride
    latent_shape = FrameCodec.latent_shape

    def encode(self, x: torch.Tensor, ref: torch.Tensor, quality=None) -> torch.Tensor:
        """Scaled latent of level ``quality`` (round it for the symbols)."""
        self.check_size(x.shape[-2], x.shape[-1])
        if ref.shape != x.shape:
            raise ValueError(f"reference {tuple(ref.shape)} and frame {tuple(x.shape)} differ in shape")
        return self.scale(self.encoder(torch.cat([x, ref], dim=1)), self._quality(quality, x.shape[0], x.device))

    def synthesize(self, latent: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Level-free latent (``dequantize``), reference and mask -> x_hat; clamped to [0, 1] outside training."""
        if mask is None:
            mask = torch.ones(latent.shape[:2], device=latent.device, dtype=latent.dtype)
        planes = mask.to(latent.dtype)[:, :, None, None].expand_as(latent)
        ctx = self.context(ref).to(latent.dtype)
        feats = self.decoder(torch.cat([latent * planes, planes, ctx], dim=1))
        x_hat = ref + self.out(torch.cat([feats, ref.to(feats.dtype)], dim=1)).to(ref.dtype)
        return x_hat if self.training else x_hat.clamp(0.0, 1.0)

    def decode(self, z: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None = None,
               quality=None) -> torch.Tensor:
        return self.synthesize(self.dequantize(z, quality), ref, mask)

    def forward(self, x: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None = None, quality=None) -> dict:
        """One P-frame: as LRAE_RD.forward, the reference beside the frame."""
        q = self.train_quality(quality, x.shape[0], x.device)
        y_hat, likelihoods = self.quantize(self.encode(x, ref, q), q)
        if mask is None:
            mask = torch.ones(y_hat.shape[:2], device=y_hat.device, dtype=y_hat.dtype)
        z = apply_mask(y_hat, mask)
        return {"x_hat": self.decode(z, ref, mask, q), "z": z, "mask": mask, "likelihoods": likelihoods,
                "quality": q, "lmbda": self.lambdas[q]}
