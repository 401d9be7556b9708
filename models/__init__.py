"""LRAE-VC models. Public API: ``from models import build_model, load_model, MODELS``.

Importing this package registers every model; ``MODELS`` maps registry names to classes.
"""

from models import classifier, convlstm, latent_p, lrae, pframe, pnc, rd  # noqa: F401  (registration side effect)
from models.base import FrameCodec
from models.registry import (
    MODELS,
    build_model,
    has_head,
    kind_of,
    load_codec_model,
    load_model,
    model_names,
    register_model,
)

__all__ = ["MODELS", "FrameCodec", "build_model", "has_head", "kind_of", "load_codec_model", "load_model",
           "model_names", "register_model"]
