"""Channel and packet loss: the one place where "what arrived" is decided (1 = received, 0 = lost).

- :mod:`network.loss.masks`: the mask convention (``apply_mask``), training dropout over latent
  channels (``sample_masks``, ``--drop-mode``) and exact evaluation masks (``eval_mask``).
- :mod:`network.loss.models`: the network loss models of ``--loss`` (registry ``LOSS_MODELS``, presets
  ``PRESETS``, traces) and the one seeding rule (``frame_slots``) shared by the sender's emulator
  (``LossEmulator``) and evaluate.py (``draws``). Adding a loss model is one class there.
"""

from network.loss.masks import (
    DEFAULT_BURST_LEN,
    MODES,
    TRAIN_MODES,
    apply_mask,
    check_mode,
    eval_mask,
    ge_chain,
    gilbert_elliott,
    sample_masks,
    tail_mask,
)
from network.loss.models import (
    GRACE_GAP,
    LOSS_MODELS,
    PRESETS,
    TRACE_DIR,
    TRACE_SLOTS,
    GilbertElliott,
    GraceLoss,
    LossEmulator,
    LossModel,
    NoLoss,
    RandomLoss,
    TailLoss,
    TraceLoss,
    consecutive_lossy,
    draws,
    frame_seed,
    frame_slots,
    loss_pattern,
    mode_model,
    parse_loss,
    read_trace,
    register,
    write_trace,
)

__all__ = [
    "DEFAULT_BURST_LEN", "GRACE_GAP", "LOSS_MODELS", "MODES", "PRESETS", "TRACE_DIR", "TRACE_SLOTS", "TRAIN_MODES",
    "GilbertElliott", "GraceLoss", "LossEmulator", "LossModel", "NoLoss", "RandomLoss", "TailLoss", "TraceLoss",
    "apply_mask", "check_mode", "consecutive_lossy", "draws", "eval_mask", "frame_seed", "frame_slots",
    "ge_chain", "gilbert_elliott", "loss_pattern", "mode_model", "parse_loss", "read_trace", "register",
    "sample_masks", "tail_mask", "write_trace",
]
