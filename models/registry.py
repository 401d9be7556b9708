"""The model registry: one name -> class table, used by every script (STYLE.md, convention 3)."""

from __future__ import annotations

import inspect
import os

import torch
from torch import nn

from utils.checkpoint import CheckpointError, load_checkpoint

MODELS: dict[str, type[nn.Module]] = {}


def register_model(name: str):
    """Class decorator: ``@register_model("LRAE_VC")`` makes the class buildable by name."""

    def wrap(cls):
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        cls.model_name = name
        MODELS[name] = cls
        return cls

    return wrap


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; its full constructor arguments are kept in ``model.config``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}")
    cls = MODELS[name]
    try:
        bound = inspect.signature(cls.__init__).bind(None, **kwargs)
    except TypeError as e:
        raise ValueError(f"bad arguments for model {name}: {e}") from None
    bound.apply_defaults()
    config = {k: v for k, v in bound.arguments.items() if k != "self"}
    model = cls(**config)
    model.config = config
    return model


def load_model(source: str | os.PathLike | dict, map_location="cpu", expect: str | None = None) -> nn.Module:
    """Rebuild any saved model from its checkpoint alone (path or loaded dict), in eval mode.

    ``expect`` names the model (or base class name) the caller needs; a checkpoint of another
    model is refused with a clear message instead of a shape error.
    """
    ckpt = source if isinstance(source, dict) else load_checkpoint(source, map_location)
    name = ckpt["model"]
    if name not in MODELS:
        raise CheckpointError(f"checkpoint holds unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    if expect is not None and name != expect:
        raise CheckpointError(f"checkpoint holds a {name} model, but {expect} was asked for")
    model = build_model(name, **ckpt.get("model_kwargs", {}))
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"weights do not fit model {name}: {first[1] if len(first) > 1 else first[0]}") from None
    if hasattr(model, "load_extra"):
        model.load_extra(ckpt.get("extra", {}))
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()
