"""LRAE_VC: our loss-resilient frame autoencoder, built to decode in real time on a CPU.

Design (why it is fast): all heavy work happens at 1/8 resolution (28x28 for a 224 frame), and
the decoder upsamples late with sub-pixel convolutions (PixelShuffle; Shi et al., CVPR 2016), so
no wide convolution ever runs at full resolution - that is where PNC's decoder spends its time.
Why it is loss-resilient: it is trained with channel dropout (tail, random or burst masks) and
its decoder is told which channels arrived (the mask is concatenated to the latent), so a lost
channel is never confused with a channel whose values happen to be zero. No normalisation
layers, so training is identical for any split of a batch across DDP processes.
"""

from __future__ import annotations

import torch
from torch import nn

from models.base import FrameCodec
from models.registry import register_model


def conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1)


class ResBlock(nn.Module):
    """x + conv(act(conv(x))). ``zero_init``: the block starts as the identity (its last conv is zero), so
    a block added to a trained model leaves its output unchanged until training moves it."""

    def __init__(self, width: int, zero_init: bool = False):
        super().__init__()
        self.body = nn.Sequential(conv(width, width), nn.LeakyReLU(0.1, inplace=True), conv(width, width))
        if zero_init:
            nn.init.zeros_(self.body[2].weight)
            nn.init.zeros_(self.body[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def upsample(cin: int, cout: int, factor: int) -> nn.Sequential:
    """Sub-pixel upsampling: a 3x3 conv at low resolution, then PixelShuffle."""
    return nn.Sequential(conv(cin, cout * factor * factor), nn.PixelShuffle(factor))


def transforms(latent_channels: int, width: int = 64, blocks: int = 2, up_width: int = 32,
               tail_blocks: int = 0) -> tuple[nn.Sequential, nn.Sequential]:
    """LRAE_VC's encoder x (B,3,H,W) -> (B,M,H/8,W/8) and its decoder [latent * mask planes, mask planes]
    (B,2M,H/8,W/8) -> x_hat (B,3,H,W) in [0,1]. LRAE_RD (models/rd.py) shares them.

    ``tail_blocks`` residual blocks (zero-initialised) refine the decoder's features at 1/4 resolution
    before its last sub-pixel stage, which otherwise makes each 4x4 pixel block from one 3x3 conv. They
    sit in the Sequential after the activation at that index, so checkpoints without them keep their keys
    and load into a model that has them (``models.registry.grow``)."""
    act = nn.LeakyReLU(0.1, inplace=True)
    encoder = nn.Sequential(
        conv(3, 32, stride=2), act,
        conv(32, width, stride=2), act,
        conv(width, width, stride=2), act,
        ResBlock(width),
        conv(width, latent_channels),
    )
    decoder = nn.Sequential(
        conv(2 * latent_channels, width), act,
        *[ResBlock(width) for _ in range(blocks)],
        upsample(width, up_width, 2),  # 28 -> 56
        nn.Sequential(act, *[ResBlock(up_width, zero_init=True) for _ in range(tail_blocks)]),
        upsample(up_width, 3, 4),  # 56 -> 224
        nn.Sigmoid(),
    )
    return encoder, decoder


@register_model("LRAE_VC", kind="frame")
class LRAE_VC(FrameCodec):  # noqa: N801 - the project's name for it
    """Loss-resilient autoencoder with a 16 x H/8 x W/8 latent.

    x: (B,3,224,224) in [0,1] -> z: (B,16,28,28) (12,544 values, PNC16's size class)
    -> x_hat: (B,3,224,224) in [0,1]. Any input whose sides are multiples of 8.
    ``decode(z, mask)``: mask (B,16), 1 = received; None means everything arrived.
    """

    stride = 8

    def __init__(self, latent_channels: int = 16, width: int = 64, blocks: int = 2, up_width: int = 32,
                 tail_blocks: int = 0):
        super().__init__()
        self.latent_channels = latent_channels
        self.encoder, self.decoder = transforms(latent_channels, width, blocks, up_width, tail_blocks)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.check_size(x.shape[-2], x.shape[-1])
        return self.encoder(x)

    def decode(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones(z.shape[:2], device=z.device, dtype=z.dtype)
        mask = mask.to(z.dtype)
        planes = mask[:, :, None, None].expand_as(z)
        return self.decoder(torch.cat([z * planes, planes], dim=1))
