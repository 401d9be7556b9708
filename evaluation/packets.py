"""What every classic baseline shares: packets of at most ``MTU`` bytes, loss draws as masks, the
freeze player and the result record. JPEG/WebP (:mod:`evaluation.baselines`) and H.264
(:mod:`evaluation.h264`) both import this module and not each other.

A loss draw is a (n_frames, slots) float mask, 1 = delivered, where slot j of row f is the j-th packet
sent for frame f. A method whose frame f needs k packets uses slots 0..k-1 of row f (evaluation feeds
our learned codec the same rows), so slot j of frame f is lost for every method or for none.

Packets carry at most ``MTU`` = ``codec.wire.MAX_PAYLOAD`` = 1200 bytes of payload (:func:`n_packets`).
Headers are not counted: ``nbytes`` everywhere is codec payload (plus FEC parity payload for the
FEC baselines); compare it with our codec's payload bytes, or add a header per packet to both.

The player (:func:`play`): a frame that cannot be decoded is not displayed and the previous displayed
frame stays on screen (freeze). If the very first frame cannot be decoded the player shows a
mid-grey frame (every value ``GREY`` = 128). ``fresh[f]`` says whether frame f shows its own decode.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from codec.wire import MAX_PAYLOAD
from utils.metrics import psnr, to_uint8

MTU = MAX_PAYLOAD  # 1200 B of payload per packet, as our codec's packets (codec/wire.py)
GREY = 128


def n_packets(nbytes: int, mtu: int = MTU) -> int:
    """Packets needed for ``nbytes`` of payload, at most ``mtu`` bytes each (0 bytes -> 0 packets)."""
    if nbytes < 0 or mtu <= 0:
        raise ValueError(f"need nbytes >= 0 and mtu > 0, got {nbytes}, {mtu}")
    return -(-int(nbytes) // int(mtu))


def as_frames(frames) -> np.ndarray:
    """A sequence as uint8 (N,H,W,3): accepts anything :func:`utils.metrics.to_uint8` accepts
    (float [0,1] or uint8 tensors (N,3,H,W), uint8 numpy (N,H,W,3)) or a list of single frames."""
    if isinstance(frames, (list, tuple)):
        return np.concatenate([as_frames(f) for f in frames]) if frames else np.zeros((0, 0, 0, 3), np.uint8)
    return np.ascontiguousarray(to_uint8(frames).permute(0, 2, 3, 1).cpu().numpy())


def as_mask(draws, n_frames: int) -> np.ndarray:
    """A loss draw (tensor or array, (n_frames, slots), 1 = delivered) as a bool numpy array."""
    m = draws.detach().cpu().numpy() if isinstance(draws, torch.Tensor) else np.asarray(draws)
    if m.ndim != 2 or m.shape[0] != n_frames:
        raise ValueError(f"loss draw must be (n_frames={n_frames}, slots), got {m.shape}")
    return m > 0.5


def slots_delivered(mask: np.ndarray, frame: int, k: int) -> np.ndarray:
    """The delivery flags of the first ``k`` slots of row ``frame`` (raises if the draw is too short)."""
    if k > mask.shape[1]:
        raise ValueError(f"frame {frame} needs {k} packets but the loss draw has {mask.shape[1]} slots; "
                         "make the draws with more slots")
    return mask[frame, :k]


@dataclass
class BaselineResult:
    """What one method showed for one sequence and one loss draw.

    ``frames`` (N,H,W,3) uint8 as displayed; ``fresh`` (N,) bool, frame f shows its own decode;
    ``intact`` (N,) bool, all packets of frame f arrived or were recovered by FEC; ``nbytes`` and
    ``packets`` (N,) payload bytes and packets sent per frame, FEC parity included; ``encode_ms``
    per frame; ``decode_ms`` per decoded frame (NaN if none was decoded); ``params`` the settings.
    """

    method: str
    frames: np.ndarray
    fresh: np.ndarray
    intact: np.ndarray
    nbytes: np.ndarray
    packets: np.ndarray
    encode_ms: float
    decode_ms: float
    params: dict = field(default_factory=dict)

    def psnr(self, reference) -> torch.Tensor:
        """Per-frame PSNR (N,) of the displayed frames against ``reference`` (any layout of as_frames)."""
        return psnr(self.frames, as_frames(reference))


def play(ok: Sequence[bool], decode: Callable[[int], np.ndarray],
         shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """The freeze player. ``ok[f]``: frame f can be decoded; ``decode(f)`` -> (H,W,3) uint8.

    Returns the displayed frames (N,H,W,3) and the mean decode time in ms per decoded frame
    (NaN if none). Only decodable frames are decoded.
    """
    h, w = shape
    out = np.empty((len(ok), h, w, 3), np.uint8)
    shown = np.full((h, w, 3), GREY, np.uint8)
    spent, count = 0.0, 0
    for f, good in enumerate(ok):
        if good:
            t0 = time.perf_counter()
            shown = decode(f)
            spent += time.perf_counter() - t0
            count += 1
        out[f] = shown
    return out, (1000.0 * spent / count if count else math.nan)
