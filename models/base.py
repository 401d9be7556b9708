"""The interface every LRAE-VC frame autoencoder offers, and the state an inter codec keeps between frames."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import nn

from network.loss import apply_mask


class FrameCodec(nn.Module):
    """A frame autoencoder whose latent channels travel as separate packets.

    Subclasses set ``latent_channels`` and ``stride`` (input side / latent side) and implement
    ``encode`` and ``decode``. Nothing bypasses the bottleneck: ``decode`` sees only the latent
    (and the mask of which channels arrived), so the halves can run on different machines.
    """

    model_name = "?"
    latent_channels: int
    stride: int
    # Quality levels: a model with more than one (LRAE_RD) takes ``quality`` (0..levels-1) in encode and
    # decode, and its wire codec codes each level with its own learned tables (codec/learned.py).
    levels: int = 1

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def dequantize(self, z: torch.Tensor, quality: int | torch.Tensor | None = None) -> torch.Tensor:
        """Received latent -> the latent ``synthesize`` takes, the same for every quality level (the
        concealment fills of playback/conceal.py work there, so a channel kept from a frame of another
        level keeps its meaning). The identity for a model without quality levels."""
        return z

    def synthesize(self, latent: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Decode a ``dequantize``d latent; ``decode`` is ``synthesize(dequantize(z, quality), mask)``."""
        return self.decode(latent, mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, quantizer=None) -> dict:
        """x: (B,3,H,W) in [0,1]; mask: (B,C), 1 = received. Returns x_hat, z (as received), mask.

        ``quantizer`` (optional callable z -> z) models the wire's quantisation during training
        (a straight-through estimator); it runs before the mask, as on the sender.
        """
        z = self.encode(x)
        if quantizer is not None:
            z = quantizer(z)
        if mask is None:
            mask = torch.ones(z.shape[:2], device=z.device, dtype=z.dtype)
        z = apply_mask(z, mask)
        return {"x_hat": self.decode(z, mask), "z": z, "mask": mask}

    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups; a group's ``lr_scale`` multiplies the schedule's learning rate
        (training/engine.py). One group at the base rate unless a model says otherwise."""
        return [{"params": list(self.parameters())}]

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of the latent of an input of the given size."""
        self.check_size(height, width)
        return self.latent_channels, height // self.stride, width // self.stride

    def check_size(self, height: int, width: int) -> None:
        if height % self.stride or width % self.stride:
            raise ValueError(f"{self.model_name} needs input sides that are multiples of {self.stride}, "
                             f"got {height}x{width}")


GREY = 0.5  # the frame "shown" before an I/P stream's first frame


def as_shown(x_hat: torch.Tensor) -> torch.Tensor:
    """A decode as the receiver shows it: rounded to 8 bits (a sender's mirror does the same, bit for bit)."""
    return torch.round(x_hat.float().clamp(0.0, 1.0) * 255.0) / 255.0


@dataclass(frozen=True, eq=False)
class InterState:
    """What a receiver of an I/P stream keeps from one frame to the next (and a sender mirrors,
    playback/inter.py). Every inter codec (registered kind ``inter``) implements

        initial_state(geometry) -> InterState           # before the first frame: mid-grey
        play(state, z, mask, inter, quality, reference=None) -> InterState   # some channel arrived; a
                                                        # P-frame coded against an older state: ``reference``
        encode_inter(x, state, quality) -> y            # a P-frame's symbols before rounding

    ``shown``: the last frame shown (1,3,H,W), 8-bit exact (``as_shown``): ``frame`` if the codec decoded it,
    else ``render()`` decodes it on first use (a sender's mirror of a codec that predicts in the latent
    never needs the pixels, and skips a decode per frame). ``latent``/``level``/``seen``: a codec that
    predicts in the latent (models/latent_p.py) keeps its last latent (1,C,h,w, the symbols of quality
    ``level``) and the channels ever received (1,C); a codec that reads the frame leaves them None."""

    frame: torch.Tensor | None = None
    latent: torch.Tensor | None = None
    level: int = 0
    seen: torch.Tensor | None = None
    render: Callable[[], torch.Tensor] | None = field(default=None, repr=False)

    @cached_property
    def shown(self) -> torch.Tensor:
        return self.frame if self.frame is not None else as_shown(self.render())
