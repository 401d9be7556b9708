"""Concealment: the one path from a frame's received latent and mask to the frame shown.

    player = Player(model, "zero+repeat-last")   # or Player(model, "convlstm", temporal=conv_lstm_ae)
    z, mask = assembly.result()                  # codec.packetize: (1,C,h,w), (1,C) float, 1 = received
    shown = player.show(z, mask)                 # shown.x_hat (1,3,H,W) in [0,1], shown.concealment
    shown = player.show(z, mask, quality=assembly.quality)   # a model with quality levels (LRAE_RD)

receiver_decode.py (FrameSink), evaluation/runner.py (OurCodec, hence evaluate.py and demo.py) and
evaluation/temporal.py (whole clips, :func:`fill_clip`) all conceal through this module, so evaluation
numbers are the receiver's numbers.

A policy is one channel fill from ``FILLS``, optionally followed by ``+repeat-last``:

- ``zero``: lost channels stay zero; the decoder is told the mask.
- ``copy``: a lost channel keeps its value in the previous frame's filled latent (its last received
  value); the decoder is told which channels have ever arrived.
- ``convlstm``: the temporal model's ``step`` (a model of registered kind ``temporal``, passed in)
  predicts the lost channels; the decoder is told its ``decoder_mask`` (channels ever received).
- ``repeat-last`` (frame level): a frame of which nothing arrived is not decoded, the last shown frame
  stays on screen; the very first frame is always decoded. ``repeat-last`` alone means
  ``zero+repeat-last``, the receiver's and evaluate's plain policy.

How they compose: the fill runs on every frame, so its state (copy's latent, the ConvLSTM's cells)
stays in step even when the frame is not decoded; then repeat-last, and a late frame (the receiver's
``--max-lag-ms``), may show the last frame instead of the decode. ``concealment`` labels what was
done: None (all arrived and decoded), ``zero_fill``, ``copy_fill``, ``temporal``, ``all_lost_decode``
(zero fill of a frame of which nothing arrived), ``repeat_last``, ``skipped_late``.

This package imports neither ``models`` nor ``data``: models arrive as objects, with their registered
``kind``.

Quality levels: a model with ``levels`` > 1 (declared by its class, models/base.FrameCodec) reads each
frame's symbols at the level its packets carried (``quality``; a frame of which nothing arrived keeps
the last level seen) and the fills work on the level-free latent (``model.dequantize``), so a channel
copied from a frame of another level keeps its meaning; ``model.synthesize`` decodes the result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

REPEAT_LAST = "repeat-last"
DEFAULT_POLICY = "zero+" + REPEAT_LAST


class Fill:
    """A channel fill: ``step(z (B,C,h,w), mask (B,C), state) -> (latent to decode, decoder mask, state)``."""

    name = ""
    label = ""  # concealment label of a frame that lost channels
    needs_temporal = False

    def __init__(self, temporal=None):
        self.temporal = temporal

    def step(self, z, mask, state):
        raise NotImplementedError

    def clip(self, z: torch.Tensor, mask: torch.Tensor):
        """A whole clip: z (B,T,C,h,w) as received, mask (B,T,C) -> (filled latent, decoder masks)."""
        out, masks, state = [], [], None
        for t in range(z.shape[1]):
            filled, used, state = self.step(z[:, t], mask[:, t], state)
            out.append(filled)
            masks.append(used)
        return torch.stack(out, dim=1), torch.stack(masks, dim=1)


FILLS: dict[str, type[Fill]] = {}


def register(cls):
    FILLS[cls.name] = cls
    return cls


@register
class ZeroFill(Fill):
    name, label = "zero", "zero_fill"

    def step(self, z, mask, state):
        return z, mask, None

    def clip(self, z, mask):
        return z, mask


@register
class CopyFill(Fill):
    name, label = "copy", "copy_fill"

    def step(self, z, mask, state):
        prev, seen = state if state is not None else (torch.zeros_like(z), torch.zeros_like(mask))
        filled = torch.where(mask[:, :, None, None] > 0.5, z, prev)
        seen = torch.maximum(seen, mask)
        return filled, seen, (filled, seen)


@register
class ConvLSTMFill(Fill):
    name, label, needs_temporal = "convlstm", "temporal", True

    def step(self, z, mask, state):
        filled, state = self.temporal.step(z, mask, state)
        return filled, self.temporal.decoder_mask(state), state

    def clip(self, z, mask):
        """The ConvLSTM over the whole clip (``fill``; a bidirectional model also looks ahead)."""
        return self.temporal.fill(z, mask)[0], torch.cummax(mask, dim=1).values


def parse_policy(policy: str) -> tuple[str, bool]:
    """"zero+repeat-last" -> ("zero", True); "repeat-last" -> ("zero", True); "convlstm" -> ("convlstm", False)."""
    parts = [p for p in policy.split("+") if p]
    repeat = REPEAT_LAST in parts
    fills = [p for p in parts if p != REPEAT_LAST]
    if len(fills) > 1 or any(f not in FILLS for f in fills) or not parts or len(set(parts)) != len(parts):
        raise ValueError(f"bad concealment policy {policy!r}; one of {', '.join(FILLS)}, optionally "
                         f"+{REPEAT_LAST} (or {REPEAT_LAST} alone)")
    return (fills[0] if fills else "zero"), repeat


def make_fill(name: str, temporal=None) -> Fill:
    cls = FILLS[name]
    if cls.needs_temporal and (temporal is None or getattr(temporal, "kind", None) != "temporal"):
        raise ValueError(f"the {name} fill needs a temporal model (kind 'temporal', e.g. conv_lstm_ae)")
    return cls(temporal)


def fill_clip(fill: str, z: torch.Tensor, mask: torch.Tensor, temporal=None):
    """Offline, a whole clip: (filled latent (B,T,C,h,w), decoder masks (B,T,C)) of one fill."""
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; choose from {', '.join(FILLS)}")
    return make_fill(fill, temporal).clip(z, mask)


@dataclass
class ShownFrame:
    """One shown frame: x_hat (1,3,H,W) in [0,1]; z and mask: the latent and decoder mask decoded (or
    that would have been); concealment label; fill_s: seconds in the fill; decoded: x_hat is a new decode."""

    x_hat: torch.Tensor
    z: torch.Tensor
    mask: torch.Tensor
    concealment: str | None
    fill_s: float
    decoded: bool


class Player:
    """Plays one stream: each frame's received latent and mask -> the frame shown (module docstring)."""

    def __init__(self, model, policy: str = DEFAULT_POLICY, temporal=None):
        name, self.repeat_last = parse_policy(policy)
        self.model, self.fill = model, make_fill(name, temporal)
        self.policy = name + (f"+{REPEAT_LAST}" if self.repeat_last else "")
        self.reset()

    def reset(self) -> None:
        """A new stream: no state, no last frame, quality level 0."""
        self.state, self.last, self.quality = None, None, 0

    @torch.no_grad()
    def show(self, z: torch.Tensor, mask: torch.Tensor, late: bool = False, quality: int | None = None) -> ShownFrame:
        received, channels = int(mask.sum()), mask.shape[1]
        if quality is not None:
            if not 0 <= quality < self.model.levels:
                raise ValueError(f"quality {quality} outside the model's levels 0..{self.model.levels - 1}")
            self.quality = quality
        t0 = time.perf_counter()
        z = self.model.dequantize(z, self.quality) if self.model.levels > 1 else z
        z_used, used, self.state = self.fill.step(z, mask, self.state)
        fill_s = time.perf_counter() - t0
        if self.last is not None and late:
            return ShownFrame(self.last, z_used, used, "skipped_late", fill_s, False)
        if self.last is not None and self.repeat_last and received == 0:
            return ShownFrame(self.last, z_used, used, "repeat_last", fill_s, False)
        self.last = self.model.synthesize(z_used, used)
        if received == channels:
            label = None
        elif received == 0 and self.fill.name == "zero":
            label = "all_lost_decode"
        else:
            label = self.fill.label
        return ShownFrame(self.last, z_used, used, label, fill_s, True)
