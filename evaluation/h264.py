"""H.264 (libx264 via PyAV) low-delay baselines under per-packet loss, with and without FEC.

Encoder: libx264, ``tune=zerolatency``, no B-frames, a fixed GOP of ``keyint`` frames whose first
frame is an IDR (``scenecut=0``: no extra I-frames), constant quality ``crf`` (float allowed),
one thread, 30 fps time base, RGB -> yuv420p with swscale's defaults. Each frame comes out as one
access unit, in display order; its byte size is the frame size (the first one also carries
SPS/PPS and x264's SEI). ``encode_ms`` covers RGB -> YUV plus encoding, per frame.

Loss (:meth:`H264Stream.run`): frame f's bytes are split into ``k`` packets of <= ``MTU`` bytes.
If any is lost, frame f is broken, and so is every later frame until the next I-frame (its
reference chain). Broken frames are not displayed: the player freezes (:func:`evaluation.packets.play`).
A displayed frame is exactly what a decoder shows for an intact chain, so the clean stream is
decoded once and frame f is shown iff f and every frame since the last I-frame arrived.

FEC (GRACE's model, packet-level erasure code such as Reed-Solomon): with overhead ``r`` a frame
of ``k`` data packets gets ``p = ceil(k·r / (1 - r))`` parity packets, each as large as a data
packet (ceil(bytes / k)); the frame is recovered iff at most ``p`` of its ``k + p`` slots are
lost. Data packets occupy slots 0..k-1, parity slots k..k+p-1. Bytes per frame include parity.
Because of the ceiling, a 1-packet P-frame gets a whole parity packet (100 % overhead at r = 20 %),
so the byte budget is matched on the total (data + parity) bytes by :func:`matched_h264`, not by
encoding at size·(1 - r).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from evaluation.packets import MTU, BaselineResult, as_frames, as_mask, n_packets, play, slots_delivered

log = logging.getLogger(__name__)

CRF_RANGE = (0.0, 51.0)


def fec_parity(k: int, r: float) -> int:
    """Parity packets for ``k`` data packets at overhead fraction ``r``: ceil(k·r / (1 - r))."""
    if not 0.0 <= r < 1.0:
        raise ValueError(f"FEC overhead must be in [0, 1), got {r}")
    return math.ceil(k * r / (1.0 - r) - 1e-9) if r > 0 else 0


def fec_layout(nbytes: int, r: float = 0.0, mtu: int = MTU) -> tuple[int, int, int]:
    """(data packets k, parity packets p, total bytes incl. parity) for one frame of ``nbytes``."""
    k = n_packets(nbytes, mtu)
    p = fec_parity(k, r)
    return k, p, int(nbytes) + p * (-(-int(nbytes) // k) if k else 0)


def chain_ok(intact, keyframe) -> np.ndarray:
    """Frame f is displayable iff it is intact and (it is an I-frame or frame f-1 is displayable)."""
    ok = np.zeros(len(intact), bool)
    prev = False
    for f, (good, key) in enumerate(zip(intact, keyframe)):
        prev = ok[f] = bool(good) and (bool(key) or prev)
    return ok


@dataclass
class H264Stream:
    """One encoded sequence: per-frame access units (display order) and their I-frame flags."""

    packets: list[bytes]
    keyframe: np.ndarray
    shape: tuple[int, int]
    encode_ms: float
    params: dict = field(default_factory=dict)
    _decoded: tuple[np.ndarray, float] | None = field(default=None, repr=False)

    def sizes(self) -> np.ndarray:
        return np.array([len(p) for p in self.packets], np.int64)

    def layout(self, fec: float = 0.0, mtu: int = MTU) -> np.ndarray:
        """(N, 3) int array of (k, p, total bytes) per frame, see :func:`fec_layout`."""
        return np.array([fec_layout(s, fec, mtu) for s in self.sizes()], np.int64).reshape(-1, 3)

    def mean_bytes(self, fec: float = 0.0, mtu: int = MTU) -> float:
        """Mean bytes per frame sent, parity included."""
        return float(self.layout(fec, mtu)[:, 2].mean())

    def decoded(self) -> tuple[np.ndarray, float]:
        """The clean decode (N,H,W,3) uint8 and the mean decode ms/frame (YUV -> RGB included)."""
        if self._decoded is None:
            ctx = av.CodecContext.create("h264", "r")
            ctx.thread_count = 1
            frames = []
            t0 = time.perf_counter()
            for data in self.packets:
                frames += [f.to_ndarray(format="rgb24") for f in ctx.decode(av.Packet(data))]
            frames += [f.to_ndarray(format="rgb24") for f in ctx.decode(None)]
            ms = 1000.0 * (time.perf_counter() - t0) / max(len(self.packets), 1)
            if len(frames) != len(self.packets):
                raise RuntimeError(f"decoded {len(frames)} frames from {len(self.packets)} access units")
            self._decoded = (np.stack(frames), ms)
        return self._decoded

    def run(self, draws, fec: float = 0.0, mtu: int = MTU, method: str | None = None) -> BaselineResult:
        """Send the stream through ``draws`` ((N, slots), 1 = delivered) with FEC overhead ``fec``."""
        clean, dec_ms = self.decoded()
        lay = self.layout(fec, mtu)
        mask = as_mask(draws, len(self.packets))
        intact = np.array([(~slots_delivered(mask, f, k + p)).sum() <= p
                           for f, (k, p, _) in enumerate(lay)], bool)
        ok = chain_ok(intact, self.keyframe)
        shown, _ = play(ok, lambda f: clean[f], self.shape)
        name = method or ("h264" if fec == 0 else f"h264-fec{round(100 * fec)}")
        return BaselineResult(name, shown, ok, intact, lay[:, 2].copy(), lay[:, 0] + lay[:, 1],
                              self.encode_ms, dec_ms, dict(self.params, fec=fec, mtu=mtu))


def encode_h264(frames, crf: float = 23.0, keyint: int = 30, preset: str = "medium",
                fps: int = 30, threads: int = 1) -> H264Stream:
    """Encode a sequence (anything :func:`evaluation.packets.as_frames` accepts) with low-delay x264."""
    seq = as_frames(frames)
    n, h, w, _ = seq.shape
    if n == 0 or h % 2 or w % 2:
        raise ValueError(f"H.264 (yuv420p) needs >= 1 frame with even height and width, got {seq.shape}")
    if not CRF_RANGE[0] <= crf <= CRF_RANGE[1] or keyint < 1:
        raise ValueError(f"need crf in {CRF_RANGE} and keyint >= 1, got {crf}, {keyint}")
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, fps), Fraction(fps)
    ctx.gop_size, ctx.max_b_frames = keyint, 0
    ctx.options = {"crf": f"{crf:.3f}", "preset": preset, "tune": "zerolatency", "threads": str(threads),
                   "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0"}
    out = []
    t0 = time.perf_counter()
    for i, img in enumerate(seq):
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += ctx.encode(frame)
    out += ctx.encode(None)
    ms = 1000.0 * (time.perf_counter() - t0) / n
    if len(out) != n or [p.pts for p in out] != list(range(n)):
        raise RuntimeError(f"x264 returned {len(out)} packets for {n} frames, not one per frame in order")
    params = {"codec": "h264", "crf": float(crf), "keyint": keyint, "preset": preset}
    return H264Stream([bytes(p) for p in out], np.array([p.is_keyframe for p in out], bool),
                      (h, w), ms, params)


def matched_h264(frames, target_bytes: float, fec: float = 0.0, keyint: int = 30, preset: str = "medium",
                 mtu: int = MTU, tol: float = 0.01, max_iter: int = 8) -> H264Stream:
    """The stream whose mean bytes/frame (FEC parity at ``fec`` included) is closest to the target.

    Searches the CRF with false position on log(bytes), which is nearly linear in CRF (about
    halving every 6 CRF); stops within ``tol`` relative error or after ``max_iter`` encodes.
    ``params["target_bytes"]`` records the target.
    """
    seq = as_frames(frames)
    tried: dict[float, tuple[float, H264Stream]] = {}

    def clamp(crf: float) -> float:
        return round(min(max(crf, CRF_RANGE[0]), CRF_RANGE[1]), 2)

    def err(crf: float) -> float:  # log(bytes / target): decreasing in crf
        if crf not in tried:
            s = encode_h264(seq, crf, keyint, preset)
            tried[crf] = (math.log(s.mean_bytes(fec, mtu) / target_bytes), s)
        return tried[crf][0]

    lo, hi = None, None  # crfs with err > 0 (too many bytes) / err < 0
    crf = 23.0
    for _ in range(max_iter):
        crf = clamp(crf)
        e = err(crf)
        if abs(e) <= tol:
            break
        if e > 0:
            lo = crf if lo is None or crf > lo else lo
        else:
            hi = crf if hi is None or crf < hi else hi
        if lo is not None and hi is not None:
            if hi - lo <= 0.02:
                break
            e_lo, e_hi = tried[lo][0], tried[hi][0]
            nxt = lo + (hi - lo) * e_lo / (e_lo - e_hi)
            crf = min(max(nxt, lo + 0.01), hi - 0.01)
        else:
            nxt = crf + 6.0 * e / math.log(2.0)
            if (e > 0 and crf >= CRF_RANGE[1]) or (e < 0 and crf <= CRF_RANGE[0]):
                log.warning("h264: target %.0f B/frame is out of the CRF range", target_bytes)
                break
            crf = nxt
    best = min(tried.values(), key=lambda t: (abs(t[0]), t[0]))[1]
    best.params.update(target_bytes=float(target_bytes), search_encodes=len(tried))
    return best
