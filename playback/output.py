"""Receiver-side outputs: PNG/mp4 writing off the decode path, reference scoring, side-by-side
panels, dropped-packet counts, the run summary and the choice of the run's folder."""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import queue
import re
import shutil
import threading
from collections import Counter, deque
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from utils.metrics import psnr, ssim, to_uint8

log = logging.getLogger(__name__)
REPLAY_CACHE = "replay_cache.json"  # network/replay.py's file; outlives the runs of a folder
RUN_DIR = re.compile(r"run-\d{3,}")
STREAM_DIR = re.compile(r"stream_\d+")
OUTPUT_FILE = re.compile(r"frame_\d+\.png|metrics\.jsonl|summary\.json|decoded\.mp4|side_by_side\.mp4")
VIDEO_CODECS = ("libx264", "mpeg4")  # the first one this PyAV build has is used
X264_OPTIONS = {"preset": "veryfast", "crf": "18"}


def to_hwc(x: torch.Tensor) -> np.ndarray:
    """(1,3,H,W) or (3,H,W) float in [0,1] -> uint8 (H,W,3), exactly as PNGs and metrics see it."""
    return to_uint8(x)[0].permute(1, 2, 0).contiguous().numpy()


def digest(x: torch.Tensor) -> str:
    """A frame's identity as shown: SHA-256 of its 8-bit (H,W,3) RGB bytes (as a PNG holds them), 16 hex digits."""
    return hashlib.sha256(to_hwc(x).tobytes()).hexdigest()[:16]


class FrameWriter:
    """Writes PNGs and mp4s (PyAV, libx264, else mpeg4) and runs other bookkeeping in one background
    thread, through a bounded queue, so neither file I/O nor scoring delays the next frame's packets
    and decode (a full queue applies back-pressure instead). Jobs run in the order they were queued.
    Several mp4s (one per path) can be open at once; ``close_video`` closes them all."""

    def __init__(self, fps: float = 30.0, max_queue: int = 64):
        self.fps = fps
        self.q: queue.Queue = queue.Queue(max_queue)
        self.videos: dict[Path, tuple] = {}  # path -> (container, stream)
        self.thread = threading.Thread(target=self._run, name="frame-writer", daemon=True)
        self.thread.start()

    def png(self, path: Path, x: torch.Tensor) -> None:
        self.q.put(("png", path, to_hwc(x)))

    def video_frame(self, path: Path, x: torch.Tensor) -> None:
        self.q.put(("mp4", path, to_hwc(x)))

    def call(self, fn, *args) -> None:
        """Run ``fn(*args)`` in the writer thread, in order with the writes (e.g. scoring, logging)."""
        self.q.put(("call", fn, args))

    def close_video(self) -> None:
        self.q.put(("close", None, None))

    def flush(self) -> None:
        """Wait until every queued job is done (e.g. at the end of a stream)."""
        self.q.join()

    def close(self) -> None:
        self.q.put(("close", None, None))
        self.q.put(None)
        self.thread.join()

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            self._do(*item)
            self.q.task_done()
        self.q.task_done()

    def _do(self, kind, path, arr) -> None:
        try:
            if kind == "call":
                path(*arr)
            elif kind == "png":
                Image.fromarray(arr).save(path)
            elif kind == "mp4":
                self.write_video(path, arr)
            else:
                self._close_videos()
        except Exception as e:  # a full disk must not kill the receiver; say what failed
            log.warning("cannot write %s: %s", path, e)

    def write_video(self, path: Path, arr: np.ndarray) -> None:
        """Append a uint8 (H,W,3) frame to the mp4 at ``path``. Writer thread only (from a ``call`` job)."""
        if path not in self.videos:
            h, w = arr.shape[:2]
            if h % 2 or w % 2:
                raise ValueError(f"mp4 needs even frame sides, got {w}x{h}")
            codec = next((c for c in VIDEO_CODECS if c in av.codecs_available), None)
            if codec is None:
                raise ValueError(f"this PyAV build has none of the video encoders {', '.join(VIDEO_CODECS)}")
            container = av.open(str(path), "w")
            options = X264_OPTIONS if codec == "libx264" else {}
            stream = container.add_stream(codec, rate=round(self.fps), options=options)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            if codec == "mpeg4":
                stream.bit_rate = 8 * w * h * round(self.fps) // 16  # ~0.5 bit/pixel: no visible blocking
            stream.codec_context.thread_count = 1  # bookkeeping: leave the cores to decoding
            self.videos[path] = (container, stream)
        container, stream = self.videos[path]
        for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
            container.mux(packet)

    def _close_videos(self) -> None:
        while self.videos:
            path, (container, stream) = self.videos.popitem()
            try:
                for packet in stream.encode(None):
                    container.mux(packet)
            finally:
                container.close()


def side_by_side(panels: list[np.ndarray | None], labels: list[str]) -> np.ndarray:
    """uint8 (H,W,3) panels -> one (H, n*W, 3) frame, each panel labelled in its top-left corner.
    A missing panel (None) is drawn grey; all panels take the shape of the first one present."""
    shape = next(p.shape for p in panels if p is not None)
    row = np.concatenate([p if p is not None else np.full(shape, 128, np.uint8) for p in panels], axis=1)
    img = Image.fromarray(row)
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    for i, label in enumerate(labels):
        x0 = i * shape[1] + 2
        left, top, right, bottom = draw.textbbox((x0, 2), label, font=font)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
        draw.text((x0, 2), label, fill=(255, 255, 255), font=font)
    return np.asarray(img)


class DropLog:
    """Counts dropped packets by reason; logs the first of each kind (one clear line) - again after
    ``reset()`` (the receiver calls it per connection and per stream), so a later sender's problem,
    e.g. a wrong key, is not dropped silently."""

    def __init__(self, logger: logging.Logger = log):
        self.counts: Counter = Counter()
        self.logged: set[str] = set()
        self.log = logger

    def note(self, err) -> None:
        """``err``: a wire.PacketError (has ``reason``)."""
        if err.reason not in self.logged:
            self.log.warning("dropped packet (%s): %s [further drops of this kind are counted]", err.reason, err)
            self.logged.add(err.reason)
        self.counts[err.reason] += 1

    def reset(self) -> None:
        self.logged.clear()


class RecordLog(deque):
    """The per-frame records a summary is computed from, bounded: the newest ``maxlen`` frames, each
    without its per-packet list (metrics.jsonl keeps everything); ``total`` counts every frame."""

    SLIM_OUT = ("received_packets",)

    def __init__(self, maxlen: int = 100_000):
        super().__init__(maxlen=maxlen)
        self.total = 0

    def append(self, rec: dict) -> None:
        super().append({k: v for k, v in rec.items() if k not in self.SLIM_OUT})
        self.total += 1

    def tail(self, n: int) -> list[dict]:
        """The last ``n`` records (as many as are kept)."""
        return list(itertools.islice(self, max(0, len(self) - n), None))


class ReferenceFrames:
    """The original frames of a stream, read in step with the decoded ones.

    ``spec`` names them in messages; ``reader(spec, size)`` yields them as (1,3,size,size) tensors (the
    receiver passes ``data.read_frames``, so this package needs no dataset code).
    """

    def __init__(self, spec: str | None, reader=None):
        self.spec, self.reader = spec, reader
        self.iter, self.pos, self.current, self.size = None, -1, None, None

    def frame(self, index: int, size: int) -> torch.Tensor | None:
        if self.spec is None:
            return None
        if self.iter is None or size != self.size or index < self.pos:
            self.iter, self.pos, self.current, self.size = self.reader(self.spec, size=size), -1, None, size
        try:
            while self.pos < index:
                self.current = next(self.iter)
                self.pos += 1
        except StopIteration:
            log.warning("reference %s has only %d frames", self.spec, self.pos + 1)
            self.spec = None
            return None
        except Exception as e:  # DataError and friends: report once, keep receiving
            log.warning("cannot read reference %s: %s", self.spec, e)
            self.spec = None
            return None
        return self.current

    def score(self, index: int, x_hat: torch.Tensor) -> dict:
        ref = self.frame(index, x_hat.shape[-1])
        if ref is None or ref.shape[-2:] != x_hat.shape[-2:]:
            return {}
        return {"psnr": round(float(psnr(x_hat, ref)[0]), 4), "ssim": round(float(ssim(x_hat, ref)[0]), 5)}


def percentile(values: list[float], q: float) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.percentile(vals, q)) if vals else None


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def summarize(records: list[dict]) -> dict:
    """Summary over per-frame records (receiver metrics.jsonl lines)."""
    lat = [r.get("latency_ms") for r in records]
    caps = [r["capture_s"] for r in records if r.get("capture_s") is not None]
    total = sum(r["bytes"] for r in records)
    n = len(records)
    duration = (max(caps) - min(caps)) * n / (n - 1) if len(caps) > 1 and n > 1 else None
    stages = {k: _round(percentile([r.get(k) for r in records], 50)) for k in
              ("arrival_ms", "wait_ms", "entropy_ms", "fill_ms", "decode_ms")}
    out = {
        "frames": n,
        "frames_decoded": sum(r["status"] != "lost" for r in records),
        "frames_complete": sum(r["status"] == "ok" for r in records),
        "frames_lost": sum(r["status"] == "lost" for r in records),
        "mean_psnr": _mean(r.get("psnr") for r in records),
        "mean_ssim": _mean(r.get("ssim") for r in records),
        **({"mean_psnr_zero_fill": _mean(r.get("psnr_zero_fill") for r in records),
            "mean_ssim_zero_fill": _mean(r.get("ssim_zero_fill") for r in records)}
           if any("concealment_zero_fill" in r for r in records) else {}),
        "latency_ms_p50": percentile(lat, 50),
        "latency_ms_p95": percentile(lat, 95),
        "bytes_per_frame": total / n if n else None,
        "kbit_s": total * 8 / 1000 / duration if duration else None,
        "mean_channels_received": _mean(r["channels_received"] / r["channels"] for r in records),
        "stage_ms_p50": stages,
    }
    return {k: _round(v) for k, v in out.items()}


def _round(v):
    return round(v, 4) if isinstance(v, float) else v


def run_files(out: Path) -> list[Path]:
    """The files and folders an earlier receiver run left in ``out`` (the replay cache is not one)."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.name != REPLAY_CACHE and not RUN_DIR.fullmatch(p.name))


def choose_out_dir(out_dir: str | None, overwrite: bool, default: str) -> tuple[Path, Path]:
    """(folder this run writes to, replay cache file). An earlier run is never destroyed silently: an
    explicit --out-dir holding one is refused unless --overwrite (which removes only what a receiver
    writes); without one, ``default`` is used, or the next free ``default/run-NNN/`` if it holds a run."""
    if out_dir is None:
        root = Path(default)
        if not run_files(root):
            return root, root / REPLAY_CACHE
        n = 2 + sum(1 for p in root.iterdir() if RUN_DIR.fullmatch(p.name))
        while (root / f"run-{n:03d}").exists():
            n += 1
        log.info("%s/ holds an earlier run: this one writes to %s/run-%03d/", root, root, n)
        return root / f"run-{n:03d}", root / REPLAY_CACHE
    out = Path(out_dir)
    earlier = run_files(out)
    if earlier and not overwrite:
        raise ValueError(f"--out-dir {out} is not empty ({earlier[0].name}, ...); pass --overwrite to replace "
                         "a receiver run there, or choose another --out-dir")
    for path in earlier:
        if path.is_dir() and STREAM_DIR.fullmatch(path.name):
            shutil.rmtree(path)
        elif path.is_file() and OUTPUT_FILE.fullmatch(path.name):
            path.unlink()
    return out, out / REPLAY_CACHE
