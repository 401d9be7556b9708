"""JPEG / WebP baselines under per-packet loss.

Every method consumes the same externally supplied loss draw: a (n_frames, slots) float mask,
1 = delivered, made by :func:`network.loss.draws` (the sender's seeding rule; packets, slots and the
freeze player: :mod:`evaluation.packets`). Nothing here re-implements loss.

JPEG / WebP (Pillow, default settings: 4:2:0 chroma, no optimisation pass): each frame is coded
independently, so a frame is displayed iff all its packets arrived (:class:`ImageCodec`). Two ways
of matching a byte budget (mean payload bytes per frame):

- ``jpeg``: the quality whose mean bytes/frame over the sequence is closest to the target;
- ``jpeg-best``: for one loss draw, the best mean-PSNR quality among those whose mean bytes/frame
  is <= the target (a lower quality needs fewer packets and may survive loss better).

H.264 and H.264 + FEC live in :mod:`evaluation.h264`; the registry of methods (names, groups, FEC,
plot styles, RD sweeps) and ``make_baseline`` in :mod:`evaluation.methods`.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Iterable

import numpy as np
from PIL import Image

from evaluation.packets import MTU, BaselineResult, as_frames, as_mask, n_packets, play, slots_delivered

log = logging.getLogger(__name__)

QUALITIES = tuple(range(1, 101))
PIL_FORMATS = {"jpeg": "JPEG", "webp": "WEBP"}


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
