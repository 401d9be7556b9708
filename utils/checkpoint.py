"""One checkpoint schema for every script (STYLE.md, convention 6).

A checkpoint is a dict of plain tensors and primitives, so ``torch.load(path, weights_only=True)``
reads it without unpickling code::

    {
      "format_version": 1,
      "model": "LRAE_VC",              # registry name (models.MODELS)
      "model_kwargs": {...},           # constructor arguments: build_model(model, **model_kwargs)
      "state_dict": {...},             # unwrapped (no "module." / "_orig_mod." prefixes)
      "optimizer": {...} | None,       # optimizer.state_dict()
      "scheduler": {...} | None,
      "epoch": int, "step": int,       # position to resume from (epoch, batches done in it)
      "args": {...},                   # vars(args) of the run that wrote it
      "rng": {...},                    # generator states (tensors)
      "metrics": {...},                # e.g. validation PSNR, best score
      "extra": {...},                  # model-specific tensors (e.g. quantiser calibration)
    }
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not match what was asked for."""


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def primitives(obj):
    """Keep only what ``weights_only`` loading accepts: primitives, lists, dicts and tensors."""
    if isinstance(obj, dict):
        return {str(k): primitives(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [primitives(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    return str(obj)


def make_checkpoint(model: torch.nn.Module, *, optimizer=None, scheduler=None, epoch: int = 0,
                    step: int = 0, args: dict | None = None, rng: dict | None = None,
                    metrics: dict | None = None, extra: dict | None = None) -> dict:
    model = unwrap(model)
    return {
        "format_version": FORMAT_VERSION,
        "model": model.model_name,
        "model_kwargs": primitives(model.config),
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "step": int(step),
        "args": primitives(args or {}),
        "rng": rng or {},
        "metrics": primitives(metrics or {}),
        "extra": extra or {},
    }


def save_checkpoint(path: str | os.PathLike, ckpt: dict) -> Path:
    """Write atomically (temporary file, then rename), so a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint with ``weights_only=True`` and check its schema."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt file, foreign pickle, truncated download
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not an LRAE-VC checkpoint (no 'model'/'state_dict' entries)")
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version}, this code reads {FORMAT_VERSION}")
    return ckpt
