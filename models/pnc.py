"""PNC autoencoders: Progressive Neural Compression (Wang et al., RTSS 2023), as the prototype built them.

Faithful to the prototype (PROTOTYPE.md 2.1-2.3 and 2.5), so numbers can be compared with the paper:
a single 9x9 stride-7 convolution takes 224x224 to 32x32, the decoder mirrors it with a stride-7
transposed convolution and refines at full resolution with 5x5 convolutions and residual adds.
What defined the architecture is kept, including the re-use of ``decoder3`` twice (a shared-weight
refinement step) and the clamp to [0, 1] at the output. What was a bug is not: there are no
prints in ``forward`` and channel loss comes in as a mask (1 = received), per sample.

The clamp: its forward pass is the prototype's, but by default its gradient is straight-through
(``ste_clamp=True``). With the prototype's hard clamp a pixel pushed outside [0, 1] gets no gradient
and stays there, and early in training a whole colour channel can die that way (seen within 40 steps
for some seeds, after which that channel never recovers). ``ste_clamp=False`` restores the hard clamp;
inference is identical either way, so any PNC checkpoint loads into both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.base import FrameCodec
from models.registry import register_model
from network.loss import apply_mask


@register_model("PNC", kind="frame")
class PNC(FrameCodec):
    """PNC with a 10-channel latent.

    x: (B,3,224,224) in [0,1] -> z: (B,10,32,32), non-negative -> x_hat: (B,3,224,224) in [0,1].
    Input sides must be multiples of 7 (224 = 7 x 32).
    """

    stride = 7

    def __init__(self, latent_channels: int = 10, encoder_width: int = 16, ste_clamp: bool = True):
        super().__init__()
        self.latent_channels, self.ste_clamp = latent_channels, ste_clamp
        self.encoder1 = nn.Conv2d(3, encoder_width, kernel_size=9, stride=7, padding=4)
        self.encoder2 = nn.Conv2d(encoder_width, latent_channels, kernel_size=3, stride=1, padding=1)
        self.decoder1 = nn.ConvTranspose2d(latent_channels, 64, kernel_size=9, stride=7, padding=4,
                                           output_padding=6)
        self.decoder2 = nn.Conv2d(64, 64, kernel_size=5, padding=2)
        self.decoder3 = nn.Conv2d(64, 64, kernel_size=5, padding=2)  # applied twice, as in PNC
        self.final = nn.Conv2d(64, 3, kernel_size=3, padding=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.check_size(x.shape[-2], x.shape[-1])
        return F.relu(self.encoder2(F.relu(self.encoder1(x))))

    def decode(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # PNC's decoder does not see the mask: lost channels simply arrive as zeros.
        y1 = F.relu(self.decoder1(z))
        y2 = F.relu(self.decoder2(y1)) + y1
        y3 = F.relu(self.decoder3(y2))
        y4 = F.relu(self.decoder3(y3)) + y3
        return clamp01(self.final(y4), self.ste_clamp)


def clamp01(x: torch.Tensor, straight_through: bool) -> torch.Tensor:
    """x clamped to [0, 1]; with ``straight_through`` the gradient passes as if there were no clamp."""
    y = x.clamp(0.0, 1.0)
    return x + (y - x).detach() if straight_through else y


@register_model("PNC16", kind="frame")
class PNC16(PNC):
    """PNC with a 16-channel latent: x (B,3,224,224) -> z (B,16,32,32). The frame AE of conv_lstm_ae."""

    def __init__(self, latent_channels: int = 16, encoder_width: int = 16, ste_clamp: bool = True):
        super().__init__(latent_channels, encoder_width, ste_clamp)


@register_model("PNC32", kind="frame")
class PNC32(PNC):
    """PNC with a 32-channel latent and a 32-wide first layer: x (B,3,224,224) -> z (B,32,32,32)."""

    def __init__(self, latent_channels: int = 32, encoder_width: int = 32, ste_clamp: bool = True):
        super().__init__(latent_channels, encoder_width, ste_clamp)


@register_model("PNC_with_classification", kind="frame", head=True)
class PNCWithClassification(PNC):
    """PNC (10 x 32 x 32 latent) plus an action classifier on the received latent, trained jointly.

    x: (B,3,224,224) -> z: (B,10,32,32) -> x_hat (B,3,224,224) and logits (B, num_classes).
    The head sees the masked latent *and* the mask, so it learns to classify from whatever
    arrived (trained with the same channel dropout as the decoder). Loss: MSE + w * CE (w is
    ``--cls-weight`` in autoencoder_train.py). Unlike the prototype's linear probe, the encoder
    is trained with the head, and every head parameter is optimised.

    Head: five 3x3 conv-BatchNorm-ReLU stages at latent resolution (w, w, 2w, 2w, 2w channels; the
    3rd and 5th with stride 2), global average and max pooling, dropout, a linear layer. On the
    synthetic clips the normalisation decides whether the head learns at all: without it 95 % of
    the ReLUs ended up dead and the head stayed at chance; with GroupNorm it stayed at chance too
    (cross-entropy alone, 8 epochs); with BatchNorm the same run fits the training frames. Under
    DDP each process normalises over its own share of the batch, as usual (the reconstruction
    path has no normalisation). The class names travel in the checkpoint (``classes``).
    """

    def __init__(self, latent_channels: int = 10, encoder_width: int = 16, num_classes: int = 8,
                 head_width: int = 64, dropout: float = 0.3, ste_clamp: bool = True,
                 classes: list[str] | None = None):
        super().__init__(latent_channels, encoder_width, ste_clamp)
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"{len(classes)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.classes = list(classes) if classes is not None else None

        def stage(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                    nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        w = head_width
        self.head = nn.Sequential(*stage(2 * latent_channels, w), *stage(w, w), *stage(w, 2 * w, 2),
                                  *stage(2 * w, 2 * w), *stage(2 * w, 2 * w, 2))
        self.pool = nn.ModuleList([nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)])
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * w, num_classes))

    def classify(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, num_classes) from a received latent (lost channels zero) and its mask."""
        if mask is None:
            mask = torch.ones(z.shape[:2], device=z.device, dtype=z.dtype)
        planes = mask.to(z.dtype)[:, :, None, None].expand_as(z)
        h = self.head(torch.cat([apply_mask(z, mask), planes], dim=1))
        return self.fc(torch.cat([pool(h).flatten(1) for pool in self.pool], dim=1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, quantizer=None) -> dict:
        out = super().forward(x, mask, quantizer)
        out["logits"] = self.classify(out["z"], out["mask"])
        return out
