"""The model registry: one name -> class table, used by every script (STYLE.md, convention 3)."""

from __future__ import annotations

import inspect
import os

import torch
from torch import nn

from codec.packetize import codec_from_checkpoint
from utils.checkpoint import CheckpointError, load_checkpoint

MODELS: dict[str, type[nn.Module]] = {}
KINDS = ("frame", "temporal", "inter", "classifier")
MAX_PARAMETERS = 200_000_000  # 800 MB of fp32 weights: far above every registered model at its defaults
PLAIN = (bool, int, float, str, type(None), list, tuple, dict)
MAX_INT_ARG = 1 << 16  # no size, depth or count argument is larger; keeps the meta build below quick


def register_model(name: str, *, kind: str, head: bool = False):
    """Class decorator: ``@register_model("LRAE_VC", kind="frame")`` makes the class buildable by name.

    ``kind`` says what the model is, so no caller has to guess from its methods:
    ``frame`` (a FrameCodec: encode/decode, its latent channels travel as packets), ``temporal`` (a
    frame codec ``.ae`` plus ``step``, which fills lost channels from earlier frames), ``inter`` (a P-frame
    codec: encode/decode against a reference frame, models/pframe.py) or ``classifier`` (frames -> logits).
    ``head=True`` marks a frame codec with a classification head (``classify``), trained on labelled data.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose from {', '.join(KINDS)}")

    def wrap(cls):
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        cls.model_name, cls.kind, cls.with_head = name, kind, head
        MODELS[name] = cls
        return cls

    return wrap


def model_names(kind: str | None = None, head: bool | None = None) -> list[str]:
    """Registered names, sorted, optionally only of one ``kind`` and/or with (or without) a head."""
    return sorted(n for n, c in MODELS.items()
                  if (kind is None or c.kind == kind) and (head is None or c.with_head == head))


def kind_of(model: nn.Module | str) -> str:
    """The registered kind of a model instance or name."""
    return (MODELS[model] if isinstance(model, str) else model).kind


def has_head(model: nn.Module | str) -> bool:
    """Whether a registered model (instance or name) carries a classification head."""
    return bool((MODELS[model] if isinstance(model, str) else model).with_head)


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
    check_size(name, cls, config)
    model = cls(**config)
    model.config = config
    return model


def check_size(name: str, cls: type[nn.Module], config: dict) -> None:
    """Refuse constructor arguments that are not plain values, that the class rejects, or that ask for
    more than MAX_PARAMETERS weights - counted on the meta device, so nothing is allocated (a checkpoint
    asking for ``width=60000`` is one clear error, not a 130 GB allocation)."""
    odd = [k for k, v in config.items() if not isinstance(v, PLAIN)]
    if odd:
        raise ValueError(f"bad arguments for model {name}: {', '.join(odd)} not plain values")
    big = [f"{k}={v}" for k, v in config.items() if type(v) is int and abs(v) > MAX_INT_ARG]
    if big:
        raise ValueError(f"bad arguments for model {name}: {', '.join(big)} (integers are at most {MAX_INT_ARG})")
    try:
        with torch.device("meta"):
            n = sum(p.numel() for p in cls(**config).parameters())
    except Exception as e:  # noqa: BLE001 - any refusal by the class becomes one clear line
        raise ValueError(f"bad arguments for model {name} {config}: {e}") from None
    if n > MAX_PARAMETERS:
        raise ValueError(f"model {name} with {config} would have {n:,} parameters "
                         f"(limit {MAX_PARAMETERS:,}); the checkpoint's model_kwargs are not sane")


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


def grow(model: nn.Module, state_dict: dict) -> list[str]:
    """Load a smaller model's weights into ``model``, whose architecture adds modules to it (e.g. LRAE_RD with
    ``tail_blocks``): every saved tensor must fit a parameter of the same name and shape; parameters the
    checkpoint lacks keep their initialisation (blocks that start as the identity). Returns their names."""
    own = model.state_dict()
    unexpected = [k for k in state_dict if k not in own]
    misfit = [k for k in state_dict if k in own and own[k].shape != state_dict[k].shape]
    if unexpected or misfit:
        k = (unexpected or misfit)[0]
        raise CheckpointError(f"weights do not fit the larger model: {k} "
                              f"{'is not one of its parameters' if unexpected else 'has another shape'}")
    model.load_state_dict(state_dict, strict=False)
    return [k for k in own if k not in state_dict]


def load_codec_model(path: str, bits: int | None = None, **codec_kwargs):
    """(frame model, codec, temporal model or None) from any checkpoint, by its own metadata.

    An inter checkpoint (kind ``inter``, LRAE_VC_P) gives the inter codec itself, with the codec of its I-frames
    whose ``inter`` codes its P-frames (codec.packetize.codec_from_checkpoint).
    A temporal checkpoint (kind ``temporal``, e.g. conv_lstm_ae) streams its frame AE ``.ae`` and is
    returned as the temporal model too.
    """
    ckpt = load_checkpoint(path)
    model = load_model(ckpt)
    temporal = None
    if model.kind == "temporal":
        temporal, model = model, model.ae
    if model.kind not in ("frame", "inter"):
        raise ValueError(f"{path} holds a {ckpt['model']} model, which is not a frame codec")
    return model, codec_from_checkpoint(model, ckpt, bits, **codec_kwargs), temporal
