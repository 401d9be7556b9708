"""LRAE-VC data: videos from the embedded sample, synthetic clips or folders, split by video.

    from data import load_videos, split_videos, FrameDataset
    vs = load_videos(["sample", "../shared/data/photos"], size=224)
    split = split_videos(vs, seed=0)            # whole videos per split; honours vs.fixed_split
    train = FrameDataset(split["train"], crop=224, train=True, seed=0)

Specs and the layout rule: data/sources.py. The "sample" source and its fixed split: data/sample.py.
The "synthetic" source: data/synthetic.py. Splits, augmentation and datasets: data/datasets.py.
Decoding and the frame cache: data/core.py.
"""

from .core import DataError, Video, VideoSet, natural_key, set_cache_limit
from .datasets import ClipDataset, FrameDataset, clip_splits, describe_split, require_labels, split_videos
from .sources import load_videos, read_frames

__all__ = [
    "ClipDataset",
    "DataError",
    "FrameDataset",
    "Video",
    "VideoSet",
    "clip_splits",
    "describe_split",
    "load_videos",
    "natural_key",
    "read_frames",
    "require_labels",
    "set_cache_limit",
    "split_videos",
]
