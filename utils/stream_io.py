"""Receiver-side outputs: PNG/mp4 writing off the decode path, reference scoring, the run summary."""

from __future__ import annotations

import logging
import math
import queue
import threading
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from utils.metrics import psnr, ssim, to_uint8

log = logging.getLogger(__name__)


def to_hwc(x: torch.Tensor) -> np.ndarray:
    """(1,3,H,W) or (3,H,W) float in [0,1] -> uint8 (H,W,3), exactly as PNGs and metrics see it."""
    return to_uint8(x)[0].permute(1, 2, 0).contiguous().numpy()


class FrameWriter:
    """Writes PNGs and an mp4 (PyAV, libx264) and runs other bookkeeping in one background thread,
    through a bounded queue, so neither file I/O nor scoring delays the next frame's packets and
    decode (a full queue applies back-pressure instead). Jobs run in the order they were queued."""

    def __init__(self, fps: float = 30.0, max_queue: int = 64):
        self.fps = fps
        self.q: queue.Queue = queue.Queue(max_queue)
        self.video = None  # (container, stream, path)
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
                self._mp4(path, arr)
            else:
                self._close_video()
        except Exception as e:  # a full disk must not kill the receiver; say what failed
            log.warning("cannot write %s: %s", path, e)

    def _mp4(self, path: Path, arr: np.ndarray) -> None:
        if self.video is None or self.video[2] != path:
            self._close_video()
            h, w = arr.shape[:2]
            if h % 2 or w % 2:
                raise ValueError(f"mp4 needs even frame sides, got {w}x{h}")
            container = av.open(str(path), "w")
            stream = container.add_stream("libx264", rate=round(self.fps))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            self.video = (container, stream, path)
        container, stream, _ = self.video
        for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
            container.mux(packet)

    def _close_video(self) -> None:
        if self.video is not None:
            container, stream, _ = self.video
            self.video = None
            for packet in stream.encode(None):
                container.mux(packet)
            container.close()


class ReferenceFrames:
    """The original frames of a stream (``data.read_frames``), read in step with the decoded ones."""

    def __init__(self, spec: str | None):
        self.spec, self.iter, self.pos, self.current, self.size = spec, None, -1, None, None

    def frame(self, index: int, size: int) -> torch.Tensor | None:
        if self.spec is None:
            return None
        if self.iter is None or size != self.size or index < self.pos:
            from data import read_frames

            self.iter, self.pos, self.current, self.size = read_frames(self.spec, size=size), -1, None, size
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
