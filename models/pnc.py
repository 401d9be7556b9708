"""PNC autoencoders: Progressive Neural Compression (Wang et al., RTSS 2023), as the prototype built them.

Faithful to the prototype (PROTOTYPE.md 2.1-2.3 and 2.5), so numbers can be compared with the paper:
a single 9x9 stride-7 convolution takes 224x224 to 32x32, the decoder mirrors it with a stride-7
transposed convolution and refines at full resolution with 5x5 convolutions and residual adds.
What defined the architecture is kept, including the re-use of ``decoder3`` twice (a shared-weight
refinement step) and the hard clamp to [0, 1] at the output. What was a bug is not: there are no
prints in ``forward`` and channel loss comes in as a mask (1 = received), per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.base import FrameCodec
from models.registry import register_model
from utils.channel_loss import apply_mask


@register_model("PNC")
class PNC(FrameCodec):
    """PNC with a 10-channel latent.

    x: (B,3,224,224) in [0,1] -> z: (B,10,32,32), non-negative -> x_hat: (B,3,224,224) in [0,1].
    Input sides must be multiples of 7 (224 = 7 x 32).
    """

    stride = 7

    def __init__(self, latent_channels: int = 10, encoder_width: int = 16):
        super().__init__()
        self.latent_channels = latent_channels
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
        return self.final(y4).clamp(0.0, 1.0)


@register_model("PNC16")
class PNC16(PNC):
    """PNC with a 16-channel latent: x (B,3,224,224) -> z (B,16,32,32). The frame AE of conv_lstm_ae."""

    def __init__(self, latent_channels: int = 16, encoder_width: int = 16):
        super().__init__(latent_channels, encoder_width)


@register_model("PNC32")
class PNC32(PNC):
    """PNC with a 32-channel latent and a 32-wide first layer: x (B,3,224,224) -> z (B,32,32,32)."""

    def __init__(self, latent_channels: int = 32, encoder_width: int = 32):
        super().__init__(latent_channels, encoder_width)


@register_model("PNC_with_classification")
class PNCWithClassification(PNC):
    """PNC (10 x 32 x 32 latent) plus an action classifier on the received latent, trained jointly.

    x: (B,3,224,224) -> z: (B,10,32,32) -> x_hat (B,3,224,224) and logits (B, num_classes).
    The head sees the masked latent *and* the mask, so it learns to classify from whatever
    arrived (trained with the same channel dropout as the decoder). Loss: MSE + w * CE (w is
    ``--cls-weight`` in autoencoder_train.py). Unlike the prototype's linear probe, the encoder
    is trained with the head, and every head parameter is optimised.
    """

    def __init__(self, latent_channels: int = 10, encoder_width: int = 16, num_classes: int = 8,
                 head_width: int = 64, dropout: float = 0.3):
        super().__init__(latent_channels, encoder_width)
        self.num_classes = num_classes
        self.head = nn.Sequential(
            nn.Conv2d(2 * latent_channels, head_width, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(head_width, head_width, kernel_size=3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(head_width, num_classes),
        )

    def classify(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, num_classes) from a received latent (lost channels zero) and its mask."""
        if mask is None:
            mask = torch.ones(z.shape[:2], device=z.device, dtype=z.dtype)
        planes = mask.to(z.dtype)[:, :, None, None].expand_as(z)
        return self.head(torch.cat([apply_mask(z, mask), planes], dim=1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, quantizer=None) -> dict:
        out = super().forward(x, mask, quantizer)
        out["logits"] = self.classify(out["z"], out["mask"])
        return out
