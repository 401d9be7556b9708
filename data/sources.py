"""Turn data specs into a VideoSet (``load_videos``) and stream frames for the codec (``read_frames``).

A spec is one of
  "sample"               the embedded default (see data/sample.py; has a fixed split)
  "synthetic[:V,T]"      seeded labelled motion clips (see data/synthetic.py)
  "frames:PATH"          a flat folder of images that ARE the frames of one video (natural order)
  PATH                   a file or folder, laid out as below.

Layout rule for PATH (hidden entries and non-media files such as SOURCES.md are ignored;
"media" = image or video file by extension; files, frames and classes are in natural order:
case-insensitive, numbers by value, frame_2 < frame_10):
  a video file            one unlabelled video, named by its stem
  an image file           one unlabelled photo (a one-frame video)
  a folder without subfolders (flat):
    video files           each one unlabelled video (name = stem)
    image files           if EVERY image stem matches ``<class>_<number>_<frame>`` (UCF Sports as the
                          prototype stored it: ``diving_7_001.jpg``, ``Diving-Side_001_0.jpg``), the images
                          are frames: video = stem minus the last ``_`` field (``diving_7``), class = stem
                          minus the last two fields (``diving``). Otherwise each image is
                          an independent, unlabelled photo (name = stem), e.g. ../shared/data/photos.
  a folder with subfolders (media files beside the subfolders are an error); each subfolder S is
    a video               if S holds images directly: unlabelled video "S" (its frames)
    a class               if S holds video files and/or subfolders of images: labelled videos
                          "S/<stem>" (UCF-101: ``ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01``) and
                          "S/<video>" (``<class>/<video>/<frame>.jpg``; a video folder without images
                          gives its video files as "S/<video>/<stem>").
    All subfolders must be of one kind.
Combining specs: names must be unique; classes are the union in order of first appearance (a single
labelled source keeps its own order); if any source imposes a fixed split, the combined fixed split is
the union and every video of the other sources goes to train (so adding training photos to "sample"
does not change its val/test sets).

Frames are decoded lazily (``Video.frames()``) through the bounded cache in data/core.py. Video files
are opened once at load time to read their frame count.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from functools import partial

import torch
from tqdm import tqdm

from .core import (
    DataError,
    Video,
    VideoSet,
    center_crop,
    decode_image,
    is_image,
    is_video,
    iter_video,
    load_image_frames,
    load_video_file,
    natural_key,
    probe_frames,
)
from .sample import load_sample, sample_clip_path
from .synthetic import load_synthetic

log = logging.getLogger(__name__)

UCF_SPORTS = re.compile(r"^(?P<cls>.+)_(?P<video>\d+)_(?P<frame>\d+)$")
FRAMES_PREFIX = "frames:"


def _listdir(folder: str) -> tuple[list[str], list[str]]:
    """(media files, subfolders) of a folder, natural-sorted, hidden entries skipped."""
    try:
        entries = sorted((e for e in os.listdir(folder) if not e.startswith(".")), key=natural_key)
    except FileNotFoundError:
        raise DataError(f"missing path: {folder}") from None
    except NotADirectoryError:
        raise DataError(f"not a folder: {folder}") from None
    files = [e for e in entries if os.path.isfile(os.path.join(folder, e)) and (is_image(e) or is_video(e))]
    dirs = [e for e in entries if os.path.isdir(os.path.join(folder, e))]
    return files, dirs


def _stem(filename: str) -> str:
    return os.path.splitext(filename)[0]


def _cap(n: int, max_frames: int | None) -> int:
    return n if max_frames is None else min(n, max_frames)


def _frames_video(name: str, label: int, paths: list[str], size: int, max_frames: int | None) -> Video:
    paths = tuple(paths[:_cap(len(paths), max_frames)])
    return Video(name, label, len(paths), partial(load_image_frames, paths, size))


def _file_video(name: str, label: int, path: str, size: int, max_frames: int | None) -> Video:
    n = _cap(probe_frames(path), max_frames)
    if n < 1:
        raise DataError(f"corrupt video: {path} (no frames)")
    return Video(name, label, n, partial(load_video_file, path, size, n))


def _labelled(groups: dict[tuple[str, str], list], make) -> VideoSet:
    """groups: (class, video name) -> payload; make(name, label, payload) -> Video."""
    classes = sorted({cls for cls, _ in groups}, key=natural_key)
    videos = [make(name, classes.index(cls), payload) for (cls, name), payload in groups.items()]
    return VideoSet(videos, classes, None)


def _video_files(folder: str, files: list[str], prefix: str, label: int, size: int,
                 max_frames: int | None) -> list[Video]:
    paths = [f for f in files if is_video(f)]
    it = tqdm(paths, desc=f"probing {folder}", leave=False) if len(paths) > 200 else paths
    return [_file_video(prefix + _stem(f), label, os.path.join(folder, f), size, max_frames) for f in it]


def _flat_folder(folder: str, files: list[str], size: int, max_frames: int | None) -> VideoSet:
    images = [f for f in files if is_image(f)]
    videos = _video_files(folder, files, "", -1, size, max_frames)
    if not images:
        return VideoSet(videos, [], None)
    matches = [UCF_SPORTS.match(_stem(f)) for f in images]
    if all(matches):  # UCF Sports frames
        groups: dict[tuple[str, str], list[str]] = {}
        for f, m in sorted(zip(images, matches), key=lambda fm: natural_key(fm[0])):
            video = _stem(f).rsplit("_", 1)[0]
            groups.setdefault((m["cls"], video), []).append(os.path.join(folder, f))
        if videos:
            raise DataError(f"unknown layout: {folder} mixes UCF Sports frames with video files")
        return _labelled(groups, lambda name, label, paths: _frames_video(name, label, paths, size, max_frames))
    stems = [_stem(f) for f in images]
    unique = len(set(stems)) == len(stems)
    for f, stem in zip(images, stems):
        path = os.path.join(folder, f)
        videos.append(Video(stem if unique else f, -1, 1, partial(load_image_frames, (path,), size)))
    return VideoSet(videos, [], None)


def _nested_folder(folder: str, dirs: list[str], size: int, max_frames: int | None) -> VideoSet:
    kinds: dict[str, str] = {}
    videos: list[Video] = []
    classes: list[str] = []
    for d in tqdm(dirs, desc=f"scanning {folder}", leave=False) if len(dirs) > 20 else dirs:
        sub = os.path.join(folder, d)
        files, subdirs = _listdir(sub)
        frames = [f for f in files if is_image(f)]
        if frames:  # S/<frame>: S is one unlabelled video
            kinds[d] = "video"
            videos.append(_frames_video(d, -1, [os.path.join(sub, f) for f in frames], size, max_frames))
            continue
        label = len(classes)
        found = _video_files(sub, files, d + "/", label, size, max_frames)
        for v in subdirs:
            vdir = os.path.join(sub, v)
            vfiles = _listdir(vdir)[0]
            vframes = [f for f in vfiles if is_image(f)]
            if vframes:
                found.append(_frames_video(f"{d}/{v}", label, [os.path.join(vdir, f) for f in vframes],
                                           size, max_frames))
            else:  # a video folder holding the clip itself (the original UCF Sports download)
                found += _video_files(vdir, vfiles, f"{d}/{v}/", label, size, max_frames)
        if found:
            kinds[d] = "class"
            classes.append(d)
            videos += found
        else:
            log.warning("%s: no frames or videos inside, skipped", sub)
    if len(set(kinds.values())) > 1:
        example = {k: d for d, k in kinds.items()}
        raise DataError(f"unknown layout: {folder} mixes frame folders ({example['video']}) "
                        f"and class folders ({example['class']})")
    return VideoSet(videos, classes, None)


def load_path(path: str, size: int = 224, max_frames: int | None = None) -> VideoSet:
    """One path spec -> VideoSet (see the module docstring for the layout rule)."""
    force_frames = path.startswith(FRAMES_PREFIX)
    if force_frames:
        path = path[len(FRAMES_PREFIX):]
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise DataError(f"missing path: {path}")
    if os.path.isfile(path):
        name = _stem(os.path.basename(path))
        if is_video(path):
            return VideoSet([_file_video(name, -1, path, size, max_frames)], [], None)
        if is_image(path):
            return VideoSet([Video(name, -1, 1, partial(load_image_frames, (path,), size))], [], None)
        raise DataError(f"not an image or video file: {path}")
    files, dirs = _listdir(path)
    if force_frames:
        images = [os.path.join(path, f) for f in files if is_image(f)]
        if not images:
            raise DataError(f"empty folder: {path} has no frame images")
        name = os.path.basename(os.path.normpath(path))
        return VideoSet([_frames_video(name, -1, images, size, max_frames)], [], None)
    if files and dirs:
        raise DataError(f"unknown layout: {path} holds both media files ({files[0]}) and subfolders ({dirs[0]})")
    vs = _nested_folder(path, dirs, size, max_frames) if dirs else _flat_folder(path, files, size, max_frames)
    if not vs.videos:
        raise DataError(f"empty folder: no images or videos found in {path}")
    return vs


def load_one(spec: str, size: int, seed: int, max_frames: int | None) -> VideoSet:
    if spec == "sample":
        return load_sample(size, max_frames)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return load_synthetic(spec, size, seed, max_frames)
    return load_path(spec, size, max_frames)


def load_videos(specs: list[str] | str, size: int = 224, seed: int = 0,
                max_frames: int | None = None) -> VideoSet:
    """Load and combine data specs. Frames are resized so the short side is ``size``; ``max_frames``
    keeps the first frames of each video; ``seed`` drives the synthetic source only."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    if not specs:
        raise DataError("no data given")
    if size < 1 or (max_frames is not None and max_frames < 1):
        raise DataError(f"bad size {size} or max_frames {max_frames}")
    videos: list[Video] = []
    classes: list[str] = []
    fixed: dict[str, list[str]] | None = None
    seen: dict[str, str] = {}
    for spec in specs:
        vs = load_one(spec, size, seed, max_frames)
        for cls in vs.classes:
            if cls not in classes:
                classes.append(cls)
        for v in vs.videos:
            if v.name in seen:
                raise DataError(f"video name {v.name!r} comes from both {seen[v.name]!r} and {spec!r}")
            seen[v.name] = spec
            if v.label >= 0:
                v.label = classes.index(vs.classes[v.label])
            videos.append(v)
        if vs.fixed_split:
            fixed = fixed or {"train": [], "val": [], "test": []}
            for key in fixed:
                fixed[key] += vs.fixed_split.get(key, [])
    if fixed is not None:
        named = {n for names in fixed.values() for n in names}
        fixed["train"] += [v.name for v in videos if v.name not in named]
    log.info("loaded %d videos (%d frames, %d classes) from %s", len(videos),
             sum(v.num_frames for v in videos), len(classes), ", ".join(specs))
    return VideoSet(videos, classes, fixed)


def read_frames(spec: str, size: int = 224) -> Iterator[torch.Tensor]:
    """Frames in order as uint8 (3,size,size) (short side resized, then center crop).

    ``spec``: a video file (PyAV), a folder of frame images (natural sort; ``frames:`` prefix allowed),
    a single image, or "sample" (the carphone clip).
    """
    if spec.startswith(FRAMES_PREFIX):
        spec = spec[len(FRAMES_PREFIX):]
    path = sample_clip_path() if spec == "sample" else os.path.expanduser(spec)
    if not os.path.exists(path):
        raise DataError(f"missing path: {path}")
    if os.path.isdir(path):
        images = [os.path.join(path, f) for f in _listdir(path)[0] if is_image(f)]
        if not images:
            raise DataError(f"empty folder: {path} has no frame images")
        return (center_crop(decode_image(p, size), size) for p in images)
    if is_video(path):
        return (center_crop(f, size) for f in iter_video(path, size))
    if is_image(path):
        return iter([center_crop(decode_image(path, size), size)])
    raise DataError(f"not an image or video file: {path}")
