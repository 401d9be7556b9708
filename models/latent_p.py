"""LRAE_RD_P: P-frames that code the change of the intra codec's latent since the receiver's last frame.

Predictive coding (DPCM) in the latent of a trained intra codec (an LRAE_RD), with the receiver's own
latent as the prediction - so it needs no training of transforms, and a P-frame decodes as exactly the
frame the intra codec would have shown:

- **The receiver's state** (``InterState``, models/base.py): the latent it decoded last, as the symbols
  of that frame's quality level, and which channels ever arrived.
- **Prediction** of frame t at level q: that latent, in level q's symbols (the same integers at the same
  level; scaled by the ratio of the two levels' gains, rounded, after a level switch).
- **Sender**: y = the intra codec's symbols of the frame before rounding; a P-frame carries the residual
  ``round(y - prediction)`` per channel (one packet per channel, as every frame), coded with this model's
  own factorized prior per level and channel (``priors``). With nothing lost the receiver's latent is then
  ``round(y)``, the intra codec's (within the dead zone, below): a P-frame costs only the entropy of the change, and no
  error accumulates from frame to frame (closed loop, as the sender codes against its mirror of the
  receiver, playback/inter.py).
- **Dead zone** (``deadzone``, as H.264's inter quantiser's rounding offset): a change smaller than it
  is sent as 0, so small fluctuations (sensor noise) cost nothing; the receiver's latent then stays within
  ``deadzone`` of the intra codec's instead of 0.5. The priors are fitted with it, so it is part of the
  model (and of its fingerprint).
- **Receiver**: a channel that arrived adds its residual to the prediction; a lost channel keeps its last
  value (the copy fill of playback/conceal.py, in the latent); the intra decoder sees the channels ever
  received as its mask. I-frames replace the channels that arrived and keep the others the same way.
- **Under loss** the sender's mirror is optimistic until the receiver's feedback arrives; a lost residual
  leaves its channel one step behind for that round trip, and the next P-frame, coded against the
  corrected mirror, carries the catch-up. A P-frame may instead be coded against an older, acknowledged
  state (``reference`` of ``play``; the packets carry its age): then every channel that arrives is exact.
  Without feedback the offset stays until the next I-frame (``--gop``).

Static regions cost almost nothing (their residual is 0); motion costs what the latent's change costs,
which is still less than the latent (measured in checkpoints/MANIFEST.md). Training is fitting the priors
to the residuals of real clips: ``python -m models.fit_latent_p``.

    model = build_model("LRAE_RD_P", intra_kwargs=intra.config); model.intra.load_state_dict(...)
    state = model.initial_state((32, 28, 28))
    y = model.encode_inter(x, state, q)        # round it (the wire codec's ``coded``) for the symbols
    state = model.play(state, z, mask, True, q)    # state.shown: the frame shown
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from models.base import GREY, FrameCodec, InterState
from models.prior import FactorizedPrior
from models.rd import level_likelihood
from models.registry import build_model, register_model


@register_model("LRAE_RD_P", kind="inter")
class LRAE_RD_P(nn.Module):  # noqa: N801 - the project's naming
    """I-frames from the intra codec inside (``intra``, an LRAE_RD), P-frames as the residual of its latent
    against the receiver's (module docstring). ``forward(x, prediction, quality)`` -> dict with z (the
    residual symbols), latent (the receiver's new latent), likelihoods (of z under the P prior) and x_hat."""

    fill_label = "copy_fill"  # what a lost channel shows (playback's concealment labels)

    def __init__(self, intra: str = "LRAE_RD", intra_kwargs: dict | None = None, deadzone: float = 0.5):
        super().__init__()
        if not 0.5 <= deadzone < 2.0:
            raise ValueError(f"deadzone must be in [0.5, 2), got {deadzone}")
        self.deadzone = deadzone
        self.intra = build_model(intra, **(intra_kwargs or {}))
        if self.intra.kind != "frame" or getattr(self.intra, "levels", 0) < 2:
            raise ValueError(f"intra={intra!r} is not a frame codec with quality levels")
        self.latent_channels, self.levels = self.intra.latent_channels, self.intra.levels
        self.stride = self.intra.stride
        self.priors = nn.ModuleList(FactorizedPrior(self.latent_channels) for _ in range(self.levels))

    check_size = FrameCodec.check_size
    latent_shape = FrameCodec.latent_shape

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.priors.parameters())}]

    # ------------------------------------------------------------------ the receiver's state
    def initial_state(self, geometry: tuple[int, int, int]) -> InterState:
        c, h, w = geometry
        device = self.priors[0].biases[0].device
        shown = torch.full((1, 3, h * self.stride, w * self.stride), GREY, device=device)
        return InterState(shown, torch.zeros(1, c, h, w, device=device), 0, torch.zeros(1, c, device=device))

    @torch.no_grad()
    def render(self, latent: torch.Tensor, seen: torch.Tensor, quality: int) -> torch.Tensor:
        """The frame a state shows: the intra decoder on its latent, told the channels ever received."""
        return self.intra.decode(latent, seen, quality)

    def predict(self, latent: torch.Tensor, level: int, quality: int) -> torch.Tensor:
        """A latent of level ``level`` as symbols of level ``quality``: itself at the same level, else scaled by
        the ratio of the two levels' gains (the encoder's symbols of both levels differ by exactly that) and
        rounded."""
        if level == quality:
            return latent
        gain = self.intra.log_gain.detach()
        ratio = torch.exp2(gain[quality] - gain[level]).to(latent.device, latent.dtype)
        return torch.round(latent * ratio[None, :, None, None])

    def residual(self, y: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """The residual before rounding, with the dead zone: a change smaller than ``deadzone`` is sent as 0."""
        d = y - prediction
        return torch.where(d.abs() < self.deadzone, torch.zeros_like(d), d) if self.deadzone > 0.5 else d

    def encode_inter(self, x: torch.Tensor, state: InterState, quality: int) -> torch.Tensor:
        """The P-frame's residual before rounding: the intra codec's symbols minus the prediction."""
        return self.residual(self.intra.encode(x, quality), self.predict(state.latent, state.level, quality))

    @torch.no_grad()
    def play(self, state: InterState, z: torch.Tensor, mask: torch.Tensor, inter: bool, quality: int,
             reference: InterState | None = None) -> InterState:
        """The state after a frame of which some channel arrived: z (1,C,h,w) its symbols as received (lost
        channels zero), mask (1,C) 1 = received; an I-frame's symbols replace, a P-frame's add to the
        prediction from ``reference`` (the state it was coded against; default ``state``, the last), in the
        channels that arrived; the others keep their value in ``state``."""
        keep = self.predict(state.latent, state.level, quality)
        got = mask[:, :, None, None] > 0.5
        if inter:
            ref = state if reference is None else reference
            sent = self.predict(ref.latent, ref.level, quality) + z
        else:
            sent = z
        latent = torch.where(got, sent, keep)
        seen = torch.maximum(state.seen, (mask > 0.5).float())
        return InterState(None, latent, int(quality), seen, partial(self.render, latent, seen, quality))

    # ------------------------------------------------------------------ fitting the priors
    def likelihood(self, z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Probability of each residual symbol under its level's prior (z (B,C,h,w), q (B,))."""
        return level_likelihood(self.priors, z, q)

    def forward(self, x: torch.Tensor, prediction: torch.Tensor, quality) -> dict:
        """One P-frame with nothing lost: x (B,3,H,W), prediction (B,C,h,w) symbols of ``quality``."""
        q = self.intra._quality(quality, x.shape[0], x.device)
        with torch.no_grad():
            z = torch.round(self.residual(self.intra.encode(x, q), prediction))
            latent = prediction + z
        return {"z": z, "latent": latent, "likelihoods": self.likelihood(z, q), "quality": q,
                "x_hat": self.intra.decode(latent, None, q)}
