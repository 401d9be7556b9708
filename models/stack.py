"""What a receiver or an evaluation decodes with: the frame codec, its temporal fill, a classifier.

    stack = load_stack("checkpoints/LRAE_VC.pth", temporal="checkpoints/conv_lstm_ae.pth")
    stack.model, stack.codec, stack.temporal, stack.classifier

receiver_decode.py and evaluate.py both load through :func:`load_stack`, so they accept and refuse
the same checkpoints with the same messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from codec.packetize import WireCodec
from codec.wire import fingerprint
from models.registry import kind_of, load_codec_model, load_model
from utils.checkpoint import load_checkpoint


@dataclass
class Stack:
    model: object  # frame codec (kind "frame")
    codec: WireCodec
    temporal: object | None  # kind "temporal" (conv_lstm_ae), unidirectional, over ``model``
    ckpt: dict  # the frame model's checkpoint (for its codec calibration at other bits)
    classifier: object | None = None
    classifier_ckpt: dict | None = None


def load_stack(model_path: str, temporal: str | None = None, classifier: str | None = None,
               bits: int | None = None) -> Stack:
    """Load ``model_path`` (a frame codec, or conv_lstm_ae: its frame AE plus its fill), an optional
    ``temporal`` conv_lstm_ae over the same frame AE, and an optional ``classifier``. Raises ValueError
    (CheckpointError) for a checkpoint of the wrong kind, a temporal model over another frame AE, or a
    bidirectional one (it cannot fill frame by frame)."""
    model, codec, fill = load_codec_model(model_path, bits=bits)
    if temporal:
        _, _, fill = load_codec_model(temporal)
        if fill is None:
            raise ValueError(f"--temporal {temporal} is not a temporal model (kind 'temporal', e.g. conv_lstm_ae)")
        if fingerprint(fill.ae) != fingerprint(model):
            raise ValueError("the temporal model's frame AE differs from --model-path's model; "
                             "give the conv_lstm_ae checkpoint as --model-path instead")
    if fill is not None and fill.bidirectional:
        raise ValueError("a bidirectional conv_lstm_ae cannot fill frame by frame; give a unidirectional one")
    stack = Stack(model, codec, fill, load_checkpoint(model_path))
    if classifier:
        stack.classifier_ckpt = load_checkpoint(classifier)
        stack.classifier = load_model(stack.classifier_ckpt)
        if kind_of(stack.classifier) != "classifier":
            raise ValueError(f"--classifier {classifier} holds a {stack.classifier_ckpt['model']} model, "
                             "not a classifier")
    return stack
