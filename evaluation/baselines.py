"""Classic-codec baselines under per-packet loss: packets, shared loss draws, the player, JPEG/WebP.

Every method consumes the same externally supplied loss draw, made by :func:`loss_draws`: a
(n_frames, slots) float mask, 1 = delivered, where slot j of row f is the j-th packet sent for
frame f. A method whose frame f needs k packets uses slots 0..k-1 of row f (evaluation must feed our
learned codec the same rows), so slot j of frame f is lost for every method or for none.
The draws come from :func:`network.loss.draws` (the sender's seeding rule); nothing here re-implements loss.

Packets carry at most ``MTU`` = ``codec.wire.MAX_PAYLOAD`` = 1200 bytes of payload (:func:`n_packets`).
Headers are not counted: ``nbytes`` everywhere is codec payload (plus FEC parity payload for the
FEC baselines); compare it with our codec's payload bytes, or add a header per packet to both.

The player (:func:`play`): a frame that cannot be decoded is not displayed and the previous displayed
frame stays on screen (freeze). If the very first frame cannot be decoded the player shows a
mid-grey frame (every value ``GREY`` = 128). ``fresh[f]`` says whether frame f shows its own decode.

JPEG / WebP (Pillow, default settings: 4:2:0 chroma, no optimisation pass): each frame is coded
independently, so a frame is displayed iff all its packets arrived (:class:`ImageCodec`). Two ways
of matching a byte budget (mean payload bytes per frame):

- ``jpeg``: the quality whose mean bytes/frame over the sequence is closest to the target;
- ``jpeg-best``: for one loss draw, the best mean-PSNR quality among those whose mean bytes/frame
  is <= the target (a lower quality needs fewer packets and may survive loss better).

H.264 and H.264 + FEC live in :mod:`evaluation.h264`. :func:`make_baseline` builds any method
by name (``METHODS``) and returns a callable ``draws -> BaselineResult``.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from codec.wire import MAX_PAYLOAD
from network.loss import DEFAULT_BURST_LEN, draws, frame_seed, mode_model  # noqa: F401 (frame_seed: its old home)
from utils.metrics import psnr, to_uint8

log = logging.getLogger(__name__)

MTU = MAX_PAYLOAD  # 1200 B of payload per packet, as our codec's packets (codec/wire.py)
DEFAULT_SLOTS = 64
GREY = 128
QUALITIES = tuple(range(1, 101))
PIL_FORMATS = {"jpeg": "JPEG", "webp": "WEBP"}
METHODS = ("jpeg", "jpeg-best", "webp", "webp-best", "h264", "h264-fec20", "h264-fec50")


def n_packets(nbytes: int, mtu: int = MTU) -> int:
    """Packets needed for ``nbytes`` of payload, at most ``mtu`` bytes each (0 bytes -> 0 packets)."""
    if nbytes < 0 or mtu <= 0:
        raise ValueError(f"need nbytes >= 0 and mtu > 0, got {nbytes}, {mtu}")
    return -(-int(nbytes) // int(mtu))


def loss_draws(mode: str, rate: float = 0.0, n_frames: int = 1, slots: int = DEFAULT_SLOTS,
               seed: int = 0, burst_len: float = DEFAULT_BURST_LEN, lost: int = 0) -> torch.Tensor:
    """(n_frames, slots) delivery draws of ``mode`` (none, tail, random, burst) at ``rate``: network.loss.draws,
    whose row f is network.loss.frame_slots, the sender's emulator. ``tail`` loses the last ``lost`` slots."""
    return draws(mode_model(mode, rate, burst_len, lost), n_frames, slots, seed)


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


def encode_image(img, codec: str = "jpeg", quality: int = 50) -> bytes:
    """One frame (uint8 (H,W,3) numpy or (3,H,W) tensor) -> JPEG or WebP bytes at ``quality``."""
    if codec not in PIL_FORMATS:
        raise ValueError(f"unknown image codec {codec!r}; choose from {', '.join(PIL_FORMATS)}")
    arr = as_frames(img)[0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=PIL_FORMATS[codec], quality=int(quality))
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """JPEG or WebP bytes -> uint8 (H,W,3)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


class ImageCodec:
    """JPEG or WebP on a fixed sequence: encodes once per quality (lazily) and caches the bytes."""

    def __init__(self, frames, codec: str = "jpeg"):
        if codec not in PIL_FORMATS:
            raise ValueError(f"unknown image codec {codec!r}; choose from {', '.join(PIL_FORMATS)}")
        self.frames = as_frames(frames)
        self.codec = codec
        self._cache: dict[int, tuple[list[bytes], float]] = {}

    def encoded(self, quality: int) -> tuple[list[bytes], float]:
        """(bytes of every frame, mean encode ms per frame) at ``quality``."""
        q = int(quality)
        if q not in self._cache:
            t0 = time.perf_counter()
            data = [encode_image(f, self.codec, q) for f in self.frames]
            ms = 1000.0 * (time.perf_counter() - t0) / max(len(data), 1)
            self._cache[q] = (data, ms)
        return self._cache[q]

    def mean_bytes(self, quality: int) -> float:
        data, _ = self.encoded(quality)
        return float(np.mean([len(d) for d in data]))

    def matched_quality(self, target_bytes: float, qualities: Iterable[int] = QUALITIES) -> int:
        """The quality whose mean bytes/frame is closest to ``target_bytes`` (ties -> fewer bytes).

        Bisects on the (almost always) increasing size-vs-quality curve, then checks two
        neighbours either side, so about a dozen qualities are encoded instead of all of them.
        """
        qs = sorted(set(int(q) for q in qualities))
        i = self._boundary(target_bytes, qs)
        near = qs[max(i - 2, 0): i + 3]
        return min(near, key=lambda q: (abs(self.mean_bytes(q) - target_bytes), self.mean_bytes(q)))

    def _boundary(self, target_bytes: float, qs: list[int]) -> int:
        """Index of the first quality in sorted ``qs`` with mean bytes >= target (or the last one)."""
        lo, hi = 0, len(qs) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.mean_bytes(qs[mid]) >= target_bytes:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def qualities_within(self, target_bytes: float, qualities: Iterable[int] = QUALITIES) -> list[int]:
        """The qualities whose mean bytes/frame is <= ``target_bytes``.

        Qualities more than two steps above the bisection boundary are assumed too large and are
        not encoded; every quality below it is encoded (each is a candidate).
        """
        qs = sorted(set(int(q) for q in qualities))
        i = self._boundary(target_bytes, qs)
        return [q for q in qs[: i + 3] if self.mean_bytes(q) <= target_bytes]

    def run(self, draws, quality: int, mtu: int = MTU, method: str | None = None) -> BaselineResult:
        """Send every frame at ``quality`` through ``draws``; a frame with any packet lost freezes."""
        data, enc_ms = self.encoded(quality)
        mask = as_mask(draws, len(data))
        sizes = np.array([len(d) for d in data], np.int64)
        packets = np.array([n_packets(s, mtu) for s in sizes], np.int64)
        intact = np.array([slots_delivered(mask, f, k).all() for f, k in enumerate(packets)], bool)
        shown, dec_ms = play(intact, lambda f: decode_image(data[f]), self.frames.shape[1:3])
        return BaselineResult(method or self.codec, shown, intact.copy(), intact, sizes, packets,
                              enc_ms, dec_ms, {"codec": self.codec, "quality": int(quality), "mtu": mtu})

    def run_best(self, draws, target_bytes: float, qualities: Iterable[int] = QUALITIES,
                 mtu: int = MTU) -> BaselineResult:
        """``jpeg-best``: the best mean-PSNR result among qualities within ``target_bytes``.

        If no quality fits the budget, the smallest quality is used and ``params["over_budget"]``
        is True. Ties in PSNR go to the higher quality.
        """
        qs = sorted(set(int(q) for q in qualities))
        cands = self.qualities_within(target_bytes, qs)
        over = not cands
        if over:
            log.warning("%s: no quality within %.0f B/frame; using q=%d", self.codec, target_bytes, qs[0])
            cands = qs[:1]
        best, best_psnr = None, -math.inf
        for q in cands:
            res = self.run(draws, q, mtu, method=f"{self.codec}-best")
            score = float(res.psnr(self.frames).mean())
            if score >= best_psnr:
                best, best_psnr = res, score
        best.params.update(target_bytes=float(target_bytes), over_budget=over, candidates=len(cands))
        return best


def make_baseline(method: str, frames, target_bytes: float | None = None, quality: int = 50,
                  crf: float = 23.0, keyint: int = 30, preset: str = "medium",
                  qualities: Iterable[int] = QUALITIES, mtu: int = MTU) -> Callable[..., BaselineResult]:
    """Prepare ``method`` (one of ``METHODS``) on ``frames``; returns ``run(draws) -> BaselineResult``.

    Encoding happens once here (or lazily on the first run); every call of ``run`` reuses it.
    With ``target_bytes`` (mean payload bytes/frame, FEC parity included) the byte budget is
    matched: ``jpeg``/``webp`` closest quality, ``*-best`` best quality within budget per draw,
    ``h264*`` the CRF whose total bytes are closest. Without it, ``quality`` / ``crf`` are used.
    """
    if method not in METHODS:
        raise ValueError(f"unknown baseline {method!r}; choose from {', '.join(METHODS)}")
    if method.startswith("h264"):
        from evaluation import h264 as baselines_h264  # local import: baselines_h264 imports this module

        fec = {"h264": 0.0, "h264-fec20": 0.2, "h264-fec50": 0.5}[method]
        if target_bytes is None:
            stream = baselines_h264.encode_h264(frames, crf=crf, keyint=keyint, preset=preset)
        else:
            stream = baselines_h264.matched_h264(frames, target_bytes, fec=fec, keyint=keyint,
                                                 preset=preset, mtu=mtu)
        return lambda draws: stream.run(draws, fec=fec, mtu=mtu, method=method)
    codec = method.split("-")[0]
    table = ImageCodec(frames, codec)
    if method.endswith("-best"):
        if target_bytes is None:
            raise ValueError(f"{method} needs target_bytes")
        return lambda draws: table.run_best(draws, target_bytes, qualities, mtu)
    q = quality if target_bytes is None else table.matched_quality(target_bytes, qualities)
    return lambda draws: table.run(draws, q, mtu, method=method)
