"""Splits by video and the torch Datasets over frames and clips.

Split rule (split_videos): whole videos go to one split, never frames. If the VideoSet carries a
fixed split (the "sample" source does), it is used as given and any video it does not name goes to
train. Otherwise videos are sorted by name, shuffled with the seed, and each label group (all
unlabelled videos form one group) gives round(n * frac) videos to val and to test, keeping at least one
for train; then, with >= 3 videos, a split with a positive fraction that came out empty takes one video
from the largest train group. The result depends only on the names, labels and seed.

Augmentation (train=True): a random crop and a horizontal flip drawn from a torch.Generator seeded by
(seed, epoch, index) only, so an item is the same whichever process, worker or order loads it (DDP
ranks agree; a resumed run repeats the epoch exactly). Call ``set_epoch`` before iterating the
DataLoader for each epoch; the epoch lives in shared memory, so workers started earlier (including
``persistent_workers=True``) see it. train=False takes the center crop. Items are float32 in [0, 1].

Flips: a video whose label a mirror image would change (the synthetic clips, whose class is a
direction: move_left/move_right, rotate_cw/rotate_ccw) says so with ``flip_invariant = False``, and
by default (``flip=None``) only flip-invariant videos are flipped. ``flip=False`` never flips,
``flip=True`` flips every video. The flip setting never changes the crops.

Colour jitter (train=True, ``colour_jitter`` s > 0, off by default): after the crop, each item's RGB
channels are put in a random order and each channel gets a gain in 1 +- s and an offset in +- s/4
(one draw per item, so all frames of a clip agree). For classifiers trained on few scenes per class:
without it a CNN can tell the training videos apart by their colours and never learn the cue.
"""

from __future__ import annotations

import bisect
import logging
import math

import numpy as np
import torch
from torch.utils.data import Dataset

from .core import DataError, Video, VideoSet
from .sources import load_videos

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_M64 = 2**64 - 1


def require_labels(videos: list[Video] | VideoSet) -> None:
    """Raise DataError if any video is unlabelled (for classification)."""
    items = videos.videos if isinstance(videos, VideoSet) else videos
    for v in items:
        if v.label < 0:
            raise DataError(f"unlabelled data where labels are needed (video {v.name}); use a labelled "
                            "source: UCF Sports frames, <class>/ folders or 'synthetic'")


def split_videos(vs: VideoSet, seed: int, val_frac: float = 0.1,
                 test_frac: float = 0.1) -> dict[str, list[Video]]:
    """Split a VideoSet by video into {"train", "val", "test"} lists (see the module docstring)."""
    if not vs.videos:
        raise DataError("no videos to split")
    if vs.fixed_split:
        where = {name: key for key in SPLITS for name in vs.fixed_split.get(key, [])}
        out: dict[str, list[Video]] = {key: [] for key in SPLITS}
        for v in sorted(vs.videos, key=lambda v: v.name):
            out[where.get(v.name, "train")].append(v)
        return out
    if val_frac < 0 or test_frac < 0 or val_frac + test_frac >= 1:
        raise DataError(f"bad split fractions val={val_frac} test={test_frac} (need >= 0, sum < 1)")
    g = torch.Generator().manual_seed(seed)
    groups: dict[int, list[Video]] = {}
    for v in sorted(vs.videos, key=lambda v: v.name):
        groups.setdefault(v.label, []).append(v)
    out = {key: [] for key in SPLITS}
    train_groups: list[list[Video]] = []
    for label in sorted(groups):
        members = groups[label]
        members = [members[i] for i in torch.randperm(len(members), generator=g).tolist()]
        n = len(members)
        n_val = math.floor(n * val_frac + 0.5)
        n_test = math.floor(n * test_frac + 0.5)
        while n_val + n_test > n - 1 and n_val + n_test > 0:  # keep one for train
            if n_test >= n_val:
                n_test -= 1
            else:
                n_val -= 1
        out["val"] += members[:n_val]
        out["test"] += members[n_val:n_val + n_test]
        train_groups.append(members[n_val + n_test:])
    if len(vs.videos) >= 3:
        for key, frac in (("val", val_frac), ("test", test_frac)):
            if frac > 0 and not out[key]:
                largest = max(train_groups, key=len)  # first of the largest: deterministic
                if sum(map(len, train_groups)) > 1:
                    out[key].append(largest.pop())
                else:  # train keeps its last video; the other held-out split has >= 2
                    other = out["test" if key == "val" else "val"]
                    out[key].append(other.pop())
    out["train"] = [v for group in train_groups for v in group]
    return {key: sorted(out[key], key=lambda v: v.name) for key in SPLITS}


def describe_split(split: dict[str, list[Video]]) -> dict:
    """JSON-able record of a split: names per split and counts of videos and frames."""
    desc: dict = {key: [v.name for v in split.get(key, [])] for key in SPLITS}
    desc["counts"] = {key: {"videos": len(split.get(key, [])),
                            "frames": sum(v.num_frames for v in split.get(key, []))} for key in SPLITS}
    return desc


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed from (seed, epoch, index) (splitmix64 finaliser)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xD1B54A32D192ED03 + index * 0x8CB92BA72F3D8DD7) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return (x ^ (x >> 31)) >> 1


def flip_invariant(video: Video) -> bool:
    """False if the video's source says a mirror image would change its label (the attribute
    ``flip_invariant``, e.g. data.synthetic.SyntheticVideo); True otherwise."""
    return bool(getattr(video, "flip_invariant", True))


def crop_frames(frames: torch.Tensor, crop: int, generator: torch.Generator | None,
                flip: bool = True) -> torch.Tensor:
    """Crop uint8 (...,3,h,w) to (...,3,crop,crop) and return float32 in [0,1].

    With a generator: random position and, if ``flip``, a horizontal flip with probability 1/2 (the
    same for every frame of a clip; the position does not depend on ``flip``); without: the center crop.
    """
    h, w = frames.shape[-2:]
    if h < crop or w < crop:
        raise DataError(f"frames {h}x{w} are smaller than the crop {crop}; load the data with size >= crop")
    if generator is None:
        top, left, flip = (h - crop) // 2, (w - crop) // 2, False
    else:
        r = torch.rand(3, generator=generator).tolist()
        top, left, flip = int(r[0] * (h - crop + 1)), int(r[1] * (w - crop + 1)), flip and r[2] < 0.5
    out = frames[..., top:top + crop, left:left + crop].numpy()
    if flip:
        out = out[..., ::-1]
    # numpy, not torch: single-threaded, so it stays fast when the CPU is oversubscribed
    return torch.from_numpy(np.divide(out, np.float32(255), dtype=np.float32))


def jitter_colours(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """x (3,H,W) or (T,3,H,W) float in [0,1]: the RGB channels in a random order, then per channel a
    gain in 1 +- strength and an offset in +- strength / 4 (the same for all T frames), clamped to [0,1]."""
    order = torch.argsort(torch.rand(3, generator=generator))
    gain = 1 + strength * (2 * torch.rand(3, 1, 1, generator=generator) - 1)
    offset = strength / 4 * (2 * torch.rand(3, 1, 1, generator=generator) - 1)
    return ((x[..., order, :, :] - 0.5) * gain + 0.5 + offset).clamp_(0, 1)


class _Augmented(Dataset):
    """Epoch bookkeeping and the per-item generator shared by FrameDataset and ClipDataset."""

    def __init__(self, crop: int, train: bool, seed: int, flip: bool | None, colour_jitter: float):
        if crop < 1 or colour_jitter < 0:
            raise DataError(f"bad crop size {crop} or colour_jitter {colour_jitter}")
        self.crop, self.train, self.seed, self.flip, self.colour_jitter = crop, train, seed, flip, colour_jitter
        # in shared memory, so DataLoader workers (persistent ones included) see set_epoch
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def _flips(self, video: Video) -> bool:
        """Whether training items of ``video`` may be mirrored (see the module docstring)."""
        return flip_invariant(video) if self.flip is None else self.flip

    def _generator(self, index: int) -> torch.Generator | None:
        if not self.train:
            return None
        return torch.Generator().manual_seed(item_seed(self.seed, self.epoch, index))

    def _augment(self, frames: torch.Tensor, video: Video, index: int) -> torch.Tensor:
        """The item's crop, flip and colour jitter (see the module docstring) as float32 in [0,1]."""
        g = self._generator(index)
        x = crop_frames(frames, self.crop, g, self._flips(video))
        if g is not None and self.colour_jitter > 0:
            x = jitter_colours(x, self.colour_jitter, g)
        return x

    def _check(self, index: int) -> int:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        return index


class FrameDataset(_Augmented):
    """Single frames of whole videos: item i -> {"x": (3,crop,crop) float32 in [0,1], "label": int64
    scalar (-1 if unlabelled), "index": i}. ``frame_step`` k keeps frames 0, k, 2k, ... of each video.
    ``flip``: None mirrors only flip-invariant videos (train=True only), False never, True always;
    ``colour_jitter``: strength of the training colour jitter (0: none)."""

    def __init__(self, videos: list[Video], crop: int = 224, train: bool = False, seed: int = 0,
                 frame_step: int = 1, flip: bool | None = None, colour_jitter: float = 0.0):
        super().__init__(crop, train, seed, flip, colour_jitter)
        if frame_step < 1:
            raise DataError(f"bad frame_step {frame_step}")
        self.videos = list(videos)
        if not self.videos:
            raise DataError("no videos for FrameDataset")
        self.frame_step = frame_step
        self.starts: list[int] = []
        total = 0
        for v in self.videos:
            self.starts.append(total)
            total += -(-v.num_frames // frame_step)
        self.total = total

    def __len__(self) -> int:
        return self.total

    def locate(self, index: int) -> tuple[Video, int]:
        """(video, frame number) of item ``index``."""
        index = self._check(index)
        k = bisect.bisect_right(self.starts, index) - 1
        return self.videos[k], (index - self.starts[k]) * self.frame_step

    def __getitem__(self, index: int) -> dict:
        index = self._check(index)
        video, t = self.locate(index)
        x = self._augment(video.frames()[t], video, index)
        return {"x": x, "label": torch.tensor(video.label, dtype=torch.int64), "index": index}


class ClipDataset(_Augmented):
    """Windows of ``length`` consecutive frames inside one video, starting every ``stride`` frames, plus
    a final window ending at the last frame. Videos shorter than ``length`` are skipped.

    item i -> {"x": (T,3,crop,crop) float32, "label": int64, "index": i, "video": name, "start": first
    frame}; one crop (flip, colour jitter) for all T frames. ``flip``, ``colour_jitter`` as for FrameDataset.
    """

    def __init__(self, videos: list[Video], length: int = 20, stride: int = 10, crop: int = 224,
                 train: bool = False, seed: int = 0, flip: bool | None = None, colour_jitter: float = 0.0):
        super().__init__(crop, train, seed, flip, colour_jitter)
        if length < 1 or stride < 1:
            raise DataError(f"bad clip length {length} or stride {stride}")
        self.videos = list(videos)
        self.length, self.stride = length, stride
        self.windows: list[tuple[int, int]] = []
        skipped = 0
        for k, v in enumerate(self.videos):
            if v.num_frames < length:
                skipped += 1
                continue
            starts = list(range(0, v.num_frames - length + 1, stride))
            if starts[-1] != v.num_frames - length:
                starts.append(v.num_frames - length)
            self.windows += [(k, s) for s in starts]
        if not self.windows:
            longest = max((v.num_frames for v in self.videos), default=0)
            raise DataError(f"no video has {length} frames for a clip (longest has {longest})")
        if skipped:
            log.info("ClipDataset: skipped %d videos shorter than %d frames", skipped, length)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        index = self._check(index)
        k, start = self.windows[index]
        video = self.videos[k]
        x = self._augment(video.frames()[start:start + self.length], video, index)
        return {"x": x, "label": torch.tensor(video.label, dtype=torch.int64), "index": index,
                "video": video.name, "start": start}


def clip_splits(specs: list[str], size: int, seed: int, length: int, stride: int, crop: int | None,
                eval_videos: int, eval_frames: int):
    """What the clip trainers (conv_lstm_ae, LRAE_VC_P) train and test on: (split, training clips of ``length``
    frames every ``stride`` frames at ``crop``, val clips, test clips) - the test clips are the first
    ``eval_frames`` frames of ``eval_videos`` test videos (evenly spaced; val if the test split is empty)
    of more than one frame, (T,3,size,size) tensors."""
    videos = load_videos(specs, size=size, seed=seed)
    split = split_videos(videos, seed=seed)
    if not split["train"]:
        raise DataError("the training split is empty: give more videos with --data")
    train = ClipDataset(split["train"], length=length, stride=stride, crop=crop, train=True, seed=seed)
    val = ClipDataset(split["val"] or split["test"], length=length, stride=length, crop=crop)
    held_out = [v for v in split["test"] or split["val"] if v.num_frames > 1]
    held_out = [held_out[i] for i in sorted({round(k * (len(held_out) - 1) / max(eval_videos - 1, 1))
                                             for k in range(min(eval_videos, len(held_out)))})]
    if not held_out:
        raise DataError("no test (or val) video with more than one frame to evaluate on")
    test = [ClipDataset([v], length=min(eval_frames, v.num_frames), stride=v.num_frames, crop=size)[0]["x"]
            for v in held_out]
    return split, train, val, test
