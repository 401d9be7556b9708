"""LRAE_VC_P: a P-frame codec conditioned on the receiver's own previous reconstruction.

Conditional coding (Li et al., "Deep Contextual Video Compression", NeurIPS 2021), cut down to run on a
CPU: no optical flow. The encoder sees the frame and the reference; the decoder sees the received latent,
its mask (1 = received) and a context computed from the reference alone. The reference is whatever the
receiver showed for the previous frame, so a lost packet degrades the reference the next frame is decoded
against; training unrolls several frames with channel loss drawn per frame so that the decoder learns to
work from a degraded reference the encoder never saw.

- **Transforms: the intra codec's, widened.** The encoder is LRAE_RD's with three more input channels (the
  reference); the decoder is LRAE_RD's with the reference's context beside the latent at 1/8 resolution
  (``width`` channels) and added, through a 1x1 projection, to its features at 1/4 resolution.
  ``start_from_intra()`` copies the trained intra codec into them, with zeros for every weight that
  reads the reference, so training starts from a P codec that *is* the intra codec and learns to use the
  reference from there. (Started from random weights with the rate term on, the P codec collapsed to
  copying the previous frame at ~0.005 bpp before its transforms learned anything: checkpoints/MANIFEST.md.)
- **Context** (reference only, the decoder's side): two stride-2 convolutions give ``width`` channels at 1/4
  resolution, a third those at 1/8.
- **Merge**: the output is ``m * ref + (1 - m) * decode`` with a per-pixel ``m`` predicted from the decoder's
  1/4-resolution features, times a learned gate that starts at 0 - so a region the reference already shows
  (a static background) can be copied instead of coded. Without it, a P codec started from the intra
  codec had to learn to reproduce the reference through its convolutions and stayed below the intra codec.
- **Latent**: M x H/8 x W/8 with LRAE_RD's quality levels (models/rd.py ``QualityLevels``: a gain and
  inverse-gain vector and a factorized prior per level, started from the intra codec's), so each channel
  is its own packet, coded with the learned tables of its level, and decodes from its own bytes.
- **Nothing received** (every channel of a P-frame lost): the decoder sees zeros and an all-zero mask and
  decodes from the context alone (trained with whole-frame loss).
- **I-frames** come from the intra codec inside (``intra``, an LRAE_RD: the same quality levels), so one
  checkpoint holds everything a sender and a receiver need.

x, ref: (B,3,H,W) in [0,1], sides multiples of 8 -> symbols (B,M,H/8,W/8) -> x_hat (B,3,H,W) in [0,1].

    model = build_model("LRAE_VC_P", intra_kwargs=intra.config); model.intra.load_state_dict(...)
    model.start_from_intra()
    out = model(x, ref, mask, quality=q)     # x_hat, z, mask, likelihoods, quality, lmbda (as LRAE_RD)
    z = torch.round(model.encode(x, ref, q)); x_hat = model.decode(z, ref, mask, q)
"""

from __future__ import annotations

import torch
from torch import nn

from models.base import GREY, FrameCodec, InterState, as_shown
from models.lrae import conv, transforms
from models.rd import QualityLevels, default_lambdas
from models.registry import build_model, register_model
from network.loss import apply_mask


@register_model("LRAE_VC_P", kind="inter")
class LRAE_VC_P(QualityLevels, nn.Module):  # noqa: N801 - the project's naming
    """P-frame codec over an intra codec (an LRAE_RD, whose transform sizes it takes): ``encode(x, ref,
    quality)``, ``decode(z, ref, mask, quality)``, ``forward`` as LRAE_RD's with the reference as second
    input (module docstring)."""

    stride = 8

    def __init__(self, intra: str = "LRAE_RD", intra_kwargs: dict | None = None,
                 lambdas: tuple[float, ...] | None = None):
        super().__init__()
        self.intra = build_model(intra, **(intra_kwargs or {}))
        if self.intra.kind != "frame" or getattr(self.intra, "levels", 0) < 2 or "up_width" not in self.intra.config:
            raise ValueError(f"intra={intra!r} is not a frame codec with quality levels and LRAE_RD's transforms")
        cfg = self.intra.config
        self.latent_channels = m = cfg["latent_channels"]
        width, up_width = cfg["width"], cfg["up_width"]
        self.encoder, self.decoder = transforms(m, width, cfg["blocks"], up_width, cfg.get("tail_blocks", 0))
        self.encoder[0] = conv(6, 32, stride=2)  # [frame, reference]
        self.decoder[0] = conv(2 * m + width, width)  # [latent * mask, mask, context at 1/8]
        self.split = 3 + cfg["blocks"]  # decoder[:split] ends at 1/4 resolution, where the context is added
        act = nn.LeakyReLU(0.1, inplace=True)
        self.context4 = nn.Sequential(conv(3, 32, stride=2), act, conv(32, width, stride=2), act)
        self.context8 = nn.Sequential(conv(width, width, stride=2), act)
        self.project4 = nn.Conv2d(width, up_width, kernel_size=1)
        # merge: x_hat = m * ref + (1 - m) * decode, m = gate * sigmoid(logits) per pixel (from the 1/4 features)
        self.merge = nn.Sequential(conv(up_width, 16), nn.PixelShuffle(4))
        self.merge_gate = nn.Parameter(torch.zeros(()))
        if lambdas is None:  # a quality index means the same for I- and P-frames
            lambdas = cfg.get("lambdas") or default_lambdas(self.intra.levels)
        self.init_levels(m, self.intra.levels, lambdas)
        self.start_from_intra()

    @torch.no_grad()
    def start_from_intra(self) -> None:
        """Copy the intra codec's transforms, gains and priors into this codec; every weight that reads the
        reference (the encoder's reference inputs, the decoder's context inputs, the 1/4 projection) is
        zero, so the P codec decodes exactly as the intra codec until training teaches it the reference.
        Call it after loading trained intra weights (the constructor calls it on the untrained ones)."""
        own = dict(self.named_parameters())
        for name, p in self.intra.named_parameters():
            mine = own[name]
            if mine.shape == p.shape:
                mine.copy_(p)
            else:  # a first conv with more input channels: the intra's weights first, zeros for the rest
                mine.zero_()
                mine[:, :p.shape[1]] = p
        nn.init.zeros_(self.project4.weight)
        nn.init.zeros_(self.project4.bias)
        self.merge_gate.zero_()

    def param_groups(self) -> list[dict]:
        """The P-frame codec's parameters (the intra codec inside trains on its own, autoencoder_train.py); the
        merge gate learns at the entropy parameters' rate (it starts at 0 and must open quickly)."""
        groups = super().param_groups()
        intra = {id(p) for p in self.intra.parameters()} | {id(self.merge_gate)}
        groups = [{**g, "params": [p for p in g["params"] if id(p) not in intra]} for g in groups]
        groups[-1]["params"].append(self.merge_gate)
        return groups

    check_size = FrameCodec.check_size  # the frame codecs' rules: sides multiples of the stride
    latent_shape = FrameCodec.latent_shape
    fill_label = "zero_fill"  # what a lost channel shows (playback's concealment labels)

    # ------------------------------------------------------------------ the receiver's state (models/base.py)
    def initial_state(self, geometry: tuple[int, int, int]) -> InterState:
        _, h, w = geometry
        return InterState(torch.full((1, 3, h * self.stride, w * self.stride), GREY, device=self.merge_gate.device))

    def encode_inter(self, x: torch.Tensor, state: InterState, quality: int) -> torch.Tensor:
        return self.encode(x, state.shown, quality)

    @torch.no_grad()
    def play(self, state: InterState, z: torch.Tensor, mask: torch.Tensor, inter: bool, quality: int,
             reference: InterState | None = None) -> InterState:
        """The frame after one of which some channel arrived: a P-frame decoded against the frame of
        ``reference`` (the state it was coded against; default ``state``, the last frame shown), an I-frame
        by the intra codec (both with zero fill; the decoders see the mask)."""
        ref = (state if reference is None else reference).shown
        x_hat = self.decode(z, ref, mask, quality) if inter else self.intra.decode(z, mask, quality)
        return InterState(as_shown(x_hat))

    def encode(self, x: torch.Tensor, ref: torch.Tensor, quality=None) -> torch.Tensor:
        """Scaled latent of level ``quality`` (round it for the symbols)."""
        self.check_size(x.shape[-2], x.shape[-1])
        if ref.shape != x.shape:
            raise ValueError(f"reference {tuple(ref.shape)} and frame {tuple(x.shape)} differ in shape")
        return self.scale(self.encoder(torch.cat([x, ref], dim=1)), self._quality(quality, x.shape[0], x.device))

    def synthesize(self, latent: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Level-free latent (``dequantize``), reference and mask -> x_hat in [0, 1]."""
        if mask is None:
            mask = torch.ones(latent.shape[:2], device=latent.device, dtype=latent.dtype)
        planes = mask.to(latent.dtype)[:, :, None, None].expand_as(latent)
        c4 = self.context4(ref.to(latent.dtype))
        feats = self.decoder[:self.split](torch.cat([latent * planes, planes, self.context8(c4)], dim=1))
        feats = feats + self.project4(c4)
        decoded = self.decoder[self.split:](feats)
        # the gate is not clamped: at 0 a clamp passes no gradient once a step pushes it below, and it never
        # opened (runs/p2); the output is clamped instead
        m = self.merge_gate * torch.sigmoid(self.merge(feats))
        return (m * ref + (1 - m) * decoded).clamp(0.0, 1.0).to(decoded.dtype)

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
