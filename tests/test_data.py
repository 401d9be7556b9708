"""data/: sources and layouts, splits by video, deterministic augmentation, clips, errors."""

import math
import pickle
from functools import partial

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import autoencoder_train
from data import (
    ClipDataset,
    DataError,
    FrameDataset,
    Video,
    VideoSet,
    describe_split,
    load_videos,
    read_frames,
    require_labels,
    split_videos,
)
from data.core import single_thread
from data.datasets import flip_invariant
from data.synthetic import CLASSES, TRAIL, _background, clip_generator, render


def write_image(path, value, size=(40, 30), mode="RGB"):
    """A flat image whose red channel is ``value`` (lets tests check frame order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[..., 0] = value
    arr[..., 1] = 7
    Image.fromarray(arr).convert(mode).save(path)


def write_video(path, frames=6, size=(48, 32), codec="libx264"):
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for t in range(frames):
            img = np.full((size[1], size[0], 3), 20 + 30 * t, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def fake_videos(lengths, labels=None):
    """In-memory videos whose pixel values encode (video, frame): frame t of video k is k*16 + t."""
    videos = []
    for k, n in enumerate(lengths):
        frames = (k * 16 + torch.arange(n, dtype=torch.uint8)).view(n, 1, 1, 1).expand(n, 3, 12, 16).clone()
        label = -1 if labels is None else labels[k]
        videos.append(Video(f"v{k:02d}", label, n, lambda f=frames: f))
    return videos


# --- synthetic ------------------------------------------------------------------------------------

def test_synthetic_is_deterministic_and_labelled():
    a = load_videos("synthetic:2,5", size=32, seed=3)
    b = load_videos("synthetic:2,5", size=32, seed=3)
    c = load_videos("synthetic:2,5", size=32, seed=4)
    assert a.classes == CLASSES and len(a.videos) == 2 * len(CLASSES)
    assert [v.label for v in a.videos] == [k for k in range(len(CLASSES)) for _ in range(2)]
    assert a.videos[0].name == "synthetic/move_left_0"
    x = a.videos[5].frames()
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x, b.videos[5].frames())
    assert not torch.equal(x, c.videos[5].frames())
    assert not torch.equal(x[0], x[-1])  # it moves
    assert a.fixed_split is None


def test_synthetic_default_size():
    vs = load_videos("synthetic", size=24)
    assert len(vs.videos) == 16 * 8 and all(v.num_frames == 12 for v in vs.videos)
    with pytest.raises(DataError):
        load_videos("synthetic:x", size=24)


def trail_cue(seed, label, index, size=64, frames=12, mirror=False):
    """Per frame, from the frame and its clip's static background only: where the trail's shades lie
    around the shape (bright = recent poses, dark = old ones). Columns: x and y of the dark-to-bright
    direction, radial spread (bright outside > 0), turn of the bright part's axis from the dark
    part's (clockwise on screen > 0)."""
    clip = render(seed, label, index, size, frames).float() / 255
    bg = _background(clip_generator(seed, label, index), size).mean(0)
    lum = clip.mean(1)
    if mirror:
        lum, bg = lum.flip(-1), bg.flip(-1)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    where = ((lum - bg).abs() > 0.08).float()  # the shape and its trail
    n = where.sum((1, 2), keepdim=True)
    shade = ((lum - (1 - TRAIL) * bg) / TRAIL - 0.5) * where  # the trail's shade wherever it lies on background
    dx = xx - (xx * where).sum((1, 2), keepdim=True) / n
    dy = yy - (yy * where).sum((1, 2), keepdim=True) / n

    def axis(q):
        return 0.5 * torch.atan2(2 * (q * dx * dy).sum((1, 2)), (q * (dx * dx - dy * dy)).sum((1, 2)))

    turn = (axis(shade.clamp(min=0)) - axis((-shade).clamp(min=0)) + math.pi / 2) % math.pi - math.pi / 2
    return torch.stack([(shade * dx).sum((1, 2)), (shade * dy).sum((1, 2)),
                        (shade * (dx * dx + dy * dy).sqrt()).sum((1, 2)), turn], 1)


def test_synthetic_frames_show_their_motion_and_mirrors_reverse_it():
    """The single-frame cue, measured on held frames without learning: the trail's shading lies the
    way the class moves; a mirror image reverses it (so training must not flip these clips)."""
    expect = {"move_left": (0, -1), "move_right": (0, 1), "move_up": (1, -1), "move_down": (1, 1),
              "rotate_cw": (3, 1), "rotate_ccw": (3, -1), "grow": (2, 1), "shrink": (2, -1)}
    with single_thread():
        for label, name in enumerate(CLASSES):
            column, sign = expect[name]
            need = 0.95 if name.startswith("move") else 0.7  # fraction of frames
            cue = torch.cat([trail_cue(0, label, k) for k in range(4)])[:, column] * sign
            assert (cue > 0).float().mean() >= need, name
            if name in ("move_left", "move_right", "rotate_cw", "rotate_ccw"):
                mirrored = torch.cat([trail_cue(0, label, k, mirror=True) for k in range(4)])[:, column] * sign
                assert (mirrored < 0).float().mean() >= need, name


def test_training_items_never_mirror_synthetic_clips():
    args = autoencoder_train.parse_args(["--model", "PNC_with_classification", "--size", "28", "--data", "synthetic"])
    assert autoencoder_train.build_data(args, needs_labels=True)[2].colour_jitter == 0.4  # the default with labels
    args = autoencoder_train.parse_args(["--model", "PNC_with_classification", "--size", "28", "--colour-jitter", "0",
                                         "--data", "synthetic"])
    videos, split, train, _, _ = autoencoder_train.build_data(args, needs_labels=True)
    assert not any(flip_invariant(v) for v in videos.videos)
    assert any(v.name.startswith("synthetic/move_left") for v in split["train"])
    for epoch in range(3):
        train.set_epoch(epoch)
        for i in range(len(train)):
            video, t = train.locate(i)
            assert torch.equal(train[i]["x"], video.frames()[t].float() / 255), (video.name, t, epoch)
    clips = ClipDataset(split["train"][:4], length=4, stride=4, crop=28, train=True, seed=3)
    for i in range(len(clips)):
        item = clips[i]
        video = next(v for v in split["train"] if v.name == item["video"])
        assert torch.equal(item["x"], video.frames()[item["start"]:item["start"] + 4].float() / 255)


def test_flip_setting_mirrors_only_flip_invariant_videos_and_keeps_crops():
    noise = Video("noise", 0, 3, partial(noise_frames, 0))
    synth = load_videos("synthetic:1,3", size=24).videos[0]
    assert flip_invariant(noise) and not flip_invariant(synth)
    mirrored = {}
    for flip in (None, True):
        mirrored[flip] = set()
        for seed in range(4):
            ds = FrameDataset([noise, synth], crop=20, train=True, seed=seed, flip=flip)
            never = FrameDataset([noise, synth], crop=20, train=True, seed=seed, flip=False)
            for i in range(len(ds)):
                assert torch.equal(ds[i]["x"], never[i]["x"]) or torch.equal(ds[i]["x"], never[i]["x"].flip(-1))
                if not torch.equal(ds[i]["x"], never[i]["x"]):  # the same crop, mirrored
                    mirrored[flip].add(ds.locate(i)[0].name)
    assert mirrored == {None: {"noise"}, True: {"noise", synth.name}}


# --- splits ---------------------------------------------------------------------------------------

def test_split_by_video_stratified_and_seeded():
    vs = load_videos("synthetic", size=16, seed=0)
    split = split_videos(vs, seed=1)
    names = {k: {v.name for v in split[k]} for k in ("train", "val", "test")}
    assert not names["train"] & names["val"] and not names["train"] & names["test"]
    assert not names["val"] & names["test"]
    assert sum(map(len, names.values())) == len(vs.videos)
    for key in ("val", "test"):  # stratified: 16 per class * 0.1 rounds to two per class
        assert sorted(v.label for v in split[key]) == [k for k in range(8) for _ in range(2)]
    shuffled = VideoSet(list(reversed(vs.videos)), vs.classes, None)
    assert describe_split(split_videos(shuffled, seed=1)) == describe_split(split)
    assert describe_split(split_videos(vs, seed=2)) != describe_split(split)
    desc = describe_split(split)
    assert desc["counts"]["train"] == {"videos": 96, "frames": 96 * 12}


def test_split_gives_every_split_a_video_and_honours_fixed_split():
    for n in (3, 4, 7):
        split = split_videos(VideoSet(fake_videos([2] * n), [], None), seed=0)
        assert all(len(split[k]) >= 1 for k in ("train", "val", "test"))
    vs = VideoSet(fake_videos([2] * 5), [], {"train": ["v00"], "val": ["v03"], "test": ["v01", "v04"]})
    desc = describe_split(split_videos(vs, seed=123))
    assert desc["val"] == ["v03"] and desc["test"] == ["v01", "v04"]
    assert desc["train"] == ["v00", "v02"]  # not named -> train


def test_require_labels():
    require_labels(fake_videos([2], labels=[0]))
    with pytest.raises(DataError, match="unlabelled"):
        require_labels(fake_videos([2, 2], labels=[0, -1]))


# --- datasets -------------------------------------------------------------------------------------

def noise_frames(k):
    return torch.randint(0, 256, (3, 3, 20, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(k))


def ramp_frames(n):
    base = torch.randint(0, 200, (3, 20, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return base + torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)


def test_frame_dataset_crops_depend_only_on_seed_epoch_index():
    videos = [Video(f"r{k}", k, 3, partial(noise_frames, k)) for k in range(3)]
    ds = FrameDataset(videos, crop=8, train=True, seed=5)
    assert len(ds) == 9
    forward = [ds[i]["x"] for i in range(len(ds))]
    backward = {i: ds[i]["x"] for i in reversed(range(len(ds)))}
    assert all(torch.equal(forward[i], backward[i]) for i in range(len(ds)))
    again = pickle.loads(pickle.dumps(FrameDataset(videos, crop=8, train=True, seed=5)))  # a worker's copy
    assert all(torch.equal(again[i]["x"], forward[i]) for i in range(len(ds)))
    ds.set_epoch(1)
    assert any(not torch.equal(ds[i]["x"], forward[i]) for i in range(len(ds)))
    item = ds[4]
    assert item["x"].shape == (3, 8, 8) and item["x"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and item["label"].item() == 1 and item["index"] == 4
    loader = DataLoader(ds, batch_size=4, num_workers=1, persistent_workers=True)
    for epoch in (0, 1):  # the workers follow set_epoch
        ds.set_epoch(epoch)
        expected = torch.stack([ds[i]["x"] for i in range(len(ds))])
        assert torch.equal(torch.cat([b["x"] for b in loader]), expected)
    val = FrameDataset(videos, crop=8)
    frame = videos[1].frames()[1]
    assert torch.equal(val[4]["x"], frame[:, 6:14, 8:16].float() / 255)  # center crop
    assert len(FrameDataset(videos, crop=8, frame_step=2)) == 6


def test_colour_jitter_is_per_item_seeded_and_keeps_the_crop():
    videos = [Video(f"r{k}", k, 3, partial(noise_frames, k)) for k in range(2)]
    plain = FrameDataset(videos, crop=8, train=True, seed=5, flip=False)
    jit = FrameDataset(videos, crop=8, train=True, seed=5, flip=False, colour_jitter=0.4)
    same = FrameDataset(videos, crop=8, train=True, seed=5, flip=False, colour_jitter=0.4)
    for i in range(len(plain)):
        x, y = plain[i]["x"], jit[i]["x"]
        assert torch.equal(y, same[i]["x"]) and y.shape == x.shape and 0 <= y.min() and y.max() <= 1
        assert not torch.allclose(x, y)
        # each output channel is an affine map of one input channel (the same crop, channels shuffled)
        fits = [[abs(float(torch.corrcoef(torch.stack([x[a].flatten(), y[b].flatten()]))[0, 1])) for a in range(3)]
                for b in range(3)]
        assert sorted(max(range(3), key=lambda a: row[a]) for row in fits) == [0, 1, 2]
        assert all(max(row) > 0.99 for row in fits)
    assert torch.equal(FrameDataset(videos, crop=8, colour_jitter=0.4)[0]["x"], FrameDataset(videos, crop=8)[0]["x"])
    still = Video("still", -1, 3, lambda: noise_frames(0)[:1].expand(3, 3, 20, 24))
    x = ClipDataset([still], length=3, crop=8, train=True, colour_jitter=0.4)[0]["x"]
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # one jitter for all frames of a clip
    with pytest.raises(DataError):
        FrameDataset(videos, crop=8, colour_jitter=-1)


def test_clip_windows_stay_in_one_video_and_include_the_last():
    videos = fake_videos([7, 3, 12], labels=[0, 1, 2])
    ds = ClipDataset(videos, length=4, stride=3, crop=8)
    starts = [(ds[i]["video"], ds[i]["start"]) for i in range(len(ds))]
    assert starts == [("v00", 0), ("v00", 3), ("v02", 0), ("v02", 3), ("v02", 6), ("v02", 8)]
    for i in range(len(ds)):
        item = ds[i]
        k = int(item["video"][1:])
        values = (item["x"][:, 0, 0, 0] * 255).round().long()
        assert values.tolist() == [k * 16 + item["start"] + t for t in range(4)]
        assert item["x"].shape == (4, 3, 8, 8) and item["label"].item() == k
    ramp = Video("ramp", -1, 5, partial(ramp_frames, 5))  # frame t = noise + t
    train = ClipDataset([ramp], length=5, stride=1, crop=8, train=True, seed=2)
    x = (train[0]["x"] * 255).round()
    assert torch.equal(x - x[:1], torch.arange(5.0).view(5, 1, 1, 1).expand_as(x))  # one crop for all frames
    with pytest.raises(DataError, match="no video"):
        ClipDataset(videos, length=20)


# --- path layouts ---------------------------------------------------------------------------------

def test_ucf_sports_old_and_new_names(tmp_path):
    old = tmp_path / "old"
    for name in ("diving_7", "diving_8", "golf_front_2"):
        for t in (1, 2, 10):
            write_image(old / f"{name}_{t:03d}.jpg", t * 20)
    vs = load_videos(str(old), size=24)
    assert vs.classes == ["diving", "golf_front"]
    assert {v.name: (v.label, v.num_frames) for v in vs.videos} == {
        "diving_7": (0, 3), "diving_8": (0, 3), "golf_front_2": (1, 3)}
    x = vs.videos[0].frames()
    assert x.shape == (3, 3, 24, 32)
    assert (x[:, 0].float().mean((1, 2)) - torch.tensor([20, 40, 200])).abs().max() < 4  # natural order
    new = tmp_path / "new"
    for name in ("Diving-Side_001", "Golf-Swing-Front_005"):
        for t in (0, 1):
            write_image(new / f"{name}_{t}.jpg", 100)
    vs = load_videos(str(new), size=16, max_frames=1)
    assert vs.classes == ["Diving-Side", "Golf-Swing-Front"]
    assert [(v.name, v.label, v.num_frames) for v in vs.videos] == [
        ("Diving-Side_001", 0, 1), ("Golf-Swing-Front_005", 1, 1)]


def test_class_video_frame_layout_and_photo_folder(tmp_path):
    root = tmp_path / "frames"
    for cls in ("jump", "run"):
        for vid in ("a", "b"):
            for t in (1, 2):
                write_image(root / cls / vid / f"{t}.png", 50, mode="L" if cls == "jump" else "RGBA")
    vs = load_videos(str(root), size=16)
    assert vs.classes == ["jump", "run"]
    assert [(v.name, v.label) for v in vs.videos] == [("jump/a", 0), ("jump/b", 0), ("run/a", 1), ("run/b", 1)]
    assert vs.videos[0].frames().shape == (2, 3, 16, 21)  # grayscale -> RGB
    photos = tmp_path / "photos"
    for k in range(3):
        write_image(photos / f"{k + 1:03d}.png", 10 * k)
    (photos / "SOURCES.md").write_text("not an image")
    vs = load_videos(str(photos), size=16)
    assert [(v.name, v.label, v.num_frames) for v in vs.videos] == [("001", -1, 1), ("002", -1, 1), ("003", -1, 1)]
    assert vs.classes == [] and vs.videos[2].frames().shape == (1, 3, 16, 21)
    forced = load_videos("frames:" + str(photos), size=16)
    assert [(v.name, v.num_frames) for v in forced.videos] == [("photos", 3)]


def test_video_files(tmp_path):
    write_video(tmp_path / "clip.mp4", frames=6)
    vs = load_videos(str(tmp_path / "clip.mp4"), size=16)
    assert [(v.name, v.num_frames) for v in vs.videos] == [("clip", 6)]
    x = vs.videos[0].frames()
    assert x.shape == (6, 3, 16, 24)
    assert x[:, :, 8, 12].float().mean(1).diff().min() > 10  # frames in order, brightening
    ucf = tmp_path / "ucf"
    write_video(ucf / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.mp4", frames=3)
    write_video(ucf / "Archery" / "v_Archery_g01_c01.mp4", frames=4, codec="mpeg4")
    write_video(ucf / "Lifting" / "001" / "4456-16_70133.mp4", frames=3)  # original UCF Sports folders
    vs = load_videos(str(ucf), size=16, max_frames=3)
    assert vs.classes == ["ApplyEyeMakeup", "Archery", "Lifting"]
    assert [(v.name, v.label, v.num_frames) for v in vs.videos] == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01", 0, 3), ("Archery/v_Archery_g01_c01", 1, 3),
        ("Lifting/001/4456-16_70133", 2, 3)]
    assert vs.videos[1].frames().shape == (3, 3, 16, 24)
    frames = list(read_frames(str(tmp_path / "clip.mp4"), size=16))
    assert len(frames) == 6 and frames[0].shape == (3, 16, 16)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="missing path"):
        load_videos(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_videos(str(tmp_path / "empty"))
    bad = tmp_path / "photos"
    write_image(bad / "good.png", 1)
    (bad / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    vs = load_videos(str(bad), size=16)
    with pytest.raises(DataError, match=r"corrupt image: .*bad\.jpg"):
        [v.frames() for v in vs.videos]
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match=r"corrupt video: .*broken\.mp4"):
        load_videos(str(tmp_path / "broken.mp4"))
    mixed = tmp_path / "mixed"
    write_image(mixed / "a.png", 1)
    write_image(mixed / "sub" / "b.png", 1)
    with pytest.raises(DataError, match="unknown layout"):
        load_videos(str(mixed))
    with pytest.raises(DataError, match="both"):
        load_videos([str(bad), str(bad)])


def test_read_frames_natural_order(tmp_path):
    for t in (10, 2, 1):
        write_image(tmp_path / f"frame_{t}.png", t * 10, size=(30, 20))
    frames = list(read_frames(str(tmp_path), size=16))
    assert [f.shape for f in frames] == [(3, 16, 16)] * 3
    assert [round(f[0].float().mean().item() / 10) for f in frames] == [1, 2, 10]
    with pytest.raises(DataError):
        read_frames(str(tmp_path / "missing"))


# --- the embedded sample --------------------------------------------------------------------------

def test_sample_loads_with_its_fixed_split():
    vs = load_videos(["sample"], size=32, max_frames=4)
    names = {v.name: v.num_frames for v in vs.videos}
    assert names["sample/bikes"] == 4 and names["sample/carphone"] == 4 and names["sample/china"] == 1
    assert "sample/astronaut" in names and len(names) >= 8
    desc = describe_split(split_videos(vs, seed=0))
    assert desc["test"] == ["sample/carphone"] and desc["val"] == ["sample/bigbuckbunny"]
    assert "sample/bikes" in desc["train"] and "sample/china" in desc["train"]
    carphone = next(v for v in vs.videos if v.name == "sample/carphone").frames()
    assert carphone.shape == (4, 3, 32, 39) and carphone.float().std() > 10
    first = next(read_frames("sample", size=32))
    assert first.shape == (3, 32, 32)


def test_sample_plus_photos_keeps_sample_val_and_test(tmp_path):
    for k in range(4):
        write_image(tmp_path / f"{k}.png", k)
    vs = load_videos(["sample", str(tmp_path)], size=16, max_frames=2)
    desc = describe_split(split_videos(vs, seed=0))
    assert desc["test"] == ["sample/carphone"] and desc["val"] == ["sample/bigbuckbunny"]
    assert {"0", "1", "2", "3"} <= set(desc["train"])
