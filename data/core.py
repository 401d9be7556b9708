"""Shared pieces of the data package: the error type, ``Video``/``VideoSet``, decoding, the frame cache.

Decoding
- Images go through PIL, are turned upright by their EXIF orientation and converted to RGB (grayscale,
  palette, RGBA and CMYK included; alpha is dropped).
- Videos are decoded with PyAV (``av``) from their first video stream; swscale does the colour
  conversion and the resize in one step (AREA when shrinking, BICUBIC when enlarging).
- Every frame is resized so its SHORT side equals ``size`` (aspect kept, long side rounded).
- A file that cannot be decoded raises :class:`DataError` naming the file.

Caching
Decoded frames live in one bounded, process-wide LRU cache (:data:`CACHE`), keyed by file and size.
The budget defaults to 1024 MB and can be set with the environment variable ``LRAE_DATA_CACHE_MB`` or
:func:`set_cache_limit`; small sources (a photo folder, UCF Sports) stay fully cached, large ones
(UCF-101) are decoded again when evicted. Each DataLoader worker process has its own cache.
Tensors returned by ``Video.frames()`` may be shared with the cache: do not modify them in place.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import av
import numpy as np
import torch
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


class DataError(ValueError):
    """Bad or missing input data; the message is one line meant for the user."""


@dataclass(eq=False)
class Video:
    """One video (or one photo, as a one-frame video).

    ``frames()`` returns uint8 (T,3,h,w) RGB with the short side equal to the ``size`` it was loaded
    with and T == ``num_frames``. Frames are decoded on demand (and cached), so a ``Video`` is cheap to
    hold and to pickle into DataLoader workers.
    """

    name: str
    label: int
    num_frames: int
    loader: Callable[[], torch.Tensor] | None = field(default=None, repr=False)

    def frames(self) -> torch.Tensor:
        if self.loader is None:
            raise DataError(f"video {self.name} has no frame source")
        return self.loader()


@dataclass
class VideoSet:
    """Videos plus their class names ([] when unlabelled) and an optional split the source imposes."""

    videos: list[Video]
    classes: list[str]
    fixed_split: dict | None = None


@contextmanager
def single_thread():
    """Run torch ops on one thread inside the block (restored after).

    Data preparation is a long chain of small ops; with torch's intra-op threads on a busy machine
    every op waits for descheduled threads (measured: 30x slower under load), one thread does not.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: frame_2 before frame_10."""
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)]


def is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTS)


def is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTS)


def short_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(new_width, new_height) so the short side equals ``size``, aspect kept."""
    if width <= height:
        return size, max(1, round(height * size / width))
    return max(1, round(width * size / height)), size


def center_crop(frame: torch.Tensor, crop: int) -> torch.Tensor:
    """Center crop (..., h, w) to (..., crop, crop)."""
    h, w = frame.shape[-2:]
    if h < crop or w < crop:
        raise DataError(f"frame {h}x{w} is smaller than the crop {crop}; load the data with size >= crop")
    top, left = (h - crop) // 2, (w - crop) // 2
    return frame[..., top:top + crop, left:left + crop]


# ---------------------------------------------------------------------------------------------------
# Bounded LRU cache


class FrameCache:
    """A byte-bounded LRU cache of frame tensors. ``get(key, make)`` decodes on a miss."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        nbytes = value.numel() * value.element_size()
        with self._lock:
            if key not in self._items and nbytes <= self.max_bytes:
                self._items[key] = value
                self.bytes += nbytes
                while self.bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self.bytes -= old.numel() * old.element_size()
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0


CACHE = FrameCache(int(float(os.environ.get("LRAE_DATA_CACHE_MB", "1024")) * 2**20))


def set_cache_limit(megabytes: float) -> None:
    """Set the frame cache budget (MB); 0 disables caching. Evicts as needed."""
    CACHE.max_bytes = int(megabytes * 2**20)
    with CACHE._lock:
        while CACHE.bytes > CACHE.max_bytes and CACHE._items:
            _, old = CACHE._items.popitem(last=False)
            CACHE.bytes -= old.numel() * old.element_size()


# ---------------------------------------------------------------------------------------------------
# Images


def decode_image(path: str, size: int) -> torch.Tensor:
    """One image file -> uint8 (3,h,w) RGB, short side == size."""
    try:
        with Image.open(path) as im:
            im.load()
            rgb = ImageOps.exif_transpose(im).convert("RGB")  # camera photos: apply EXIF rotation
    except FileNotFoundError:
        raise DataError(f"missing image: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"corrupt image: {path} ({e})") from None
    new = short_side_size(rgb.width, rgb.height, size)
    if new != rgb.size:
        rgb = rgb.resize(new, Image.Resampling.BICUBIC)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(rgb).transpose(2, 0, 1)))


def load_image_frames(paths: tuple[str, ...], size: int) -> torch.Tensor:
    """Frame images of one video (in the given order) -> uint8 (T,3,h,w), cached.

    All frames are resized to the size of the first one, so a stray odd-sized frame cannot break stacking.
    """
    def make() -> torch.Tensor:
        frames = [decode_image(p, size) for p in paths]
        h, w = frames[0].shape[-2:]
        for i, f in enumerate(frames):
            if f.shape[-2:] != (h, w):
                frames[i] = torch.nn.functional.interpolate(f[None].float(), size=(h, w), mode="bilinear",
                                                            antialias=True)[0].round().clamp(0, 255).byte()
        return torch.stack(frames)

    return CACHE.get(("images", paths, size), make)


# ---------------------------------------------------------------------------------------------------
# Videos


def _open(path: str):
    try:
        container = av.open(path)
    except FileNotFoundError:
        raise DataError(f"missing video: {path}") from None
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DataError(f"corrupt video: {path} ({e})") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"corrupt video: {path} (no video stream)")
    return container


def probe_frames(path: str) -> int:
    """Number of frames of a video file without decoding it (container count, else packets)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        if stream.frames > 0:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DataError(f"corrupt video: {path} ({e})") from None
    finally:
        container.close()


def iter_video(path: str, size: int, max_frames: int | None = None) -> Iterator[torch.Tensor]:
    """Decode a video file frame by frame -> uint8 (3,h,w) RGB, short side == size.

    The file is opened now (a missing or corrupt file raises here), decoded as the iterator advances.
    """
    return _decode(_open(path), path, size, max_frames)


def _decode(container, path: str, size: int, max_frames: int | None) -> Iterator[torch.Tensor]:
    try:
        stream = container.streams.video[0]
        count = 0
        for frame in container.decode(stream):
            if max_frames is not None and count >= max_frames:
                break
            w, h = short_side_size(frame.width, frame.height, size)
            interp = "AREA" if w < frame.width else "BICUBIC"
            # planar output avoids an HWC -> CHW transpose; gbrp is stored G, B, R
            planes = frame.reformat(width=w, height=h, format="gbrp", interpolation=interp).planes
            g, b, r = (np.frombuffer(p, np.uint8).reshape(h, p.line_size)[:, :w] for p in planes)
            yield torch.from_numpy(np.stack([r, g, b]))
            count += 1
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DataError(f"corrupt video: {path} ({e})") from None
    finally:
        container.close()


def decode_video(path: str, size: int, num_frames: int) -> torch.Tensor:
    """All frames of a video file -> uint8 (num_frames,3,h,w).

    The count comes from the container at load time; if decoding yields fewer frames the last one is
    repeated (with a warning), if more the extra ones are dropped, so datasets can index safely.
    """
    frames = list(iter_video(path, size, num_frames))
    if not frames:
        raise DataError(f"corrupt video: {path} (no decodable frames)")
    if len(frames) < num_frames:
        log.warning("%s: decoded %d frames, container said %d; repeating the last frame",
                    path, len(frames), num_frames)
        frames += [frames[-1]] * (num_frames - len(frames))
    return torch.stack(frames)


def load_video_file(path: str, size: int, num_frames: int) -> torch.Tensor:
    """Cached :func:`decode_video`."""
    return CACHE.get(("video", path, size, num_frames), lambda: decode_video(path, size, num_frames))
