"""prepare_frames.py: clip mode makes a folder the sender streams; --tree a dataset that loads back."""

import numpy as np
import pytest
import torch
from PIL import Image

import prepare_frames
from data import load_videos, read_frames


def test_clip_mode_writes_a_folder_the_sender_reads_back(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    g = np.random.default_rng(0)
    for i in range(3):  # smooth frames survive JPEG at q95 with a small error
        base = g.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(base).resize((40, 32), Image.BILINEAR).save(src / f"f_{i}.png")
    assert prepare_frames.main([str(src), str(tmp_path / "out"), "--size", "32"]) == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000.jpg", "00001.jpg", "00002.jpg"]
    for a, b in zip(read_frames(str(src), 32), read_frames(str(tmp_path / "out"), 32), strict=True):
        assert (a.float() - b.float()).abs().mean() < 3


def test_tree_mode_round_trips_labels_and_frames(tmp_path):
    before = load_videos(["synthetic:2,3"], size=32)
    prepare_frames.main(["synthetic:2,3", str(tmp_path / "tree"), "--tree", "--size", "32"])
    after = load_videos([str(tmp_path / "tree")], size=32)
    assert sorted(after.classes) == sorted(before.classes)
    assert len(after.videos) == len(before.videos) == 16
    by_name = {v.name.split("/")[-1]: v for v in after.videos}
    for v in before.videos:
        w = by_name[v.name.replace("/", "_")]
        assert after.classes[w.label] == before.classes[v.label]
        assert w.num_frames == v.num_frames == 3
        assert (w.frames().float() - v.frames().float()).abs().mean() < 10  # JPEG of noisy frames


def test_refuses_a_non_empty_folder_and_bad_input(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not an empty folder"):
        prepare_frames.main(["synthetic:1,2", str(out), "--tree"])
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with pytest.raises(SystemExit, match="missing path"):
        prepare_frames.main([str(tmp_path / "nothere.mp4"), str(tmp_path / "new")])
    assert not (tmp_path / "new").exists()
    assert torch.is_tensor(next(read_frames("sample", 32)))
