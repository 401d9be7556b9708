"""Frame classifiers that judge reconstructions: the seed's "simple pretrained classifier" (SimpleCNN).

The prototype (PROTOTYPE.md 2.5(c)) trained ``SimpleCNN`` - conv32, pool, conv64, pool, FC 64*56*56 ->
256 -> 8 - on original frames and tested it on decoded ones. Kept: two conv/pool stages of 32 and 64
filters, an FC 256 layer, training on originals only. Changed, and why:

- the input is resized to ``input_size`` (default 112) inside ``forward``, so the classifier scores
  frames of any size the same way (an evaluation at 224 or 64 px sees what training saw);
- two more conv stages (128, 128; receptive field ~46 px at 112) and a global average + max pool
  replace the 51 M-parameter FC over 56x56 maps: the features are translation invariant, so a cue
  such as a motion trail counts wherever the object is in the frame; ≈ 0.3 M parameters;
- batch norm after every conv: training converges in ~100 steps instead of idling at chance for
  the first few hundred (minutes on 2 CPU cores);
- the class names travel in the checkpoint (``classes``), so evaluation maps labels by name, never
  by an index that happens to agree.

Registered like the codecs (``build_model("SimpleCNN", num_classes=8)``, ``load_model(path)``);
registered with ``kind="classifier"`` so scripts can list them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import register_model


@register_model("SimpleCNN", kind="classifier")
class SimpleCNN(nn.Module):
    """A small CNN frame classifier: four conv-BN-ReLU stages (w, 2w, 4w, 4w; max pool after the
    first three), global average and max pool, FC 256, dropout, FC num_classes.

    x: (B,3,H,W) float in [0,1], any H, W (resized to ``input_size`` first) -> {"logits": (B, num_classes)}.
    """

    def __init__(self, num_classes: int = 8, width: int = 32, input_size: int = 112, dropout: float = 0.3,
                 classes: list[str] | None = None):
        super().__init__()
        if num_classes < 2 or width < 1 or input_size < 16:
            raise ValueError(f"need num_classes >= 2, width >= 1, input_size >= 16; got {num_classes}, "
                             f"{width}, {input_size}")
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"{len(classes)} class names for {num_classes} classes")
        self.num_classes, self.input_size = num_classes, input_size
        self.classes = list(classes) if classes is not None else None
        w = width

        def stage(c_in: int, c_out: int, pool: bool) -> list[nn.Module]:
            layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            return layers + [nn.MaxPool2d(2)] if pool else layers

        self.features = nn.Sequential(*stage(3, w, True), *stage(w, 2 * w, True), *stage(2 * w, 4 * w, True),
                                      *stage(4 * w, 4 * w, False))
        self.head = nn.Sequential(nn.Linear(8 * w, 256), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Linear(256, num_classes))

    def forward(self, x: torch.Tensor) -> dict:
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        f = self.features(x)
        return {"logits": self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))}


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Predicted labels (N,) int64 of frames x (N,3,H,W), float in [0,1] or uint8; eval mode, batched."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = []
        for i in range(0, len(x), batch_size):
            chunk = x[i:i + batch_size].to(device)
            if chunk.dtype == torch.uint8:
                chunk = chunk.float() / 255.0
            out.append(model(chunk)["logits"].argmax(1).cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)
    finally:
        model.train(was_training)
