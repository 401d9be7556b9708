"""The shipped checkpoints: each listed in checkpoints/MANIFEST.md with its sha256, small, and loadable."""

import hashlib
import re
from pathlib import Path

import pytest
import torch

from data.synthetic import CLASSES
from models import load_model

CKPT = Path(__file__).resolve().parents[1] / "checkpoints"
LISTED = dict(re.findall(r"^\| `([^`]+\.pth)` \| `([0-9a-f]{64})` \|", (CKPT / "MANIFEST.md").read_text(), re.M))


def test_manifest_lists_every_shipped_file():
    assert set(LISTED) == {p.name for p in CKPT.glob("*.pth")}
    needed = ("LRAE_RD", "LRAE_RD_P", "LRAE_VC", "PNC16", "conv_lstm_ae", "PNC_with_classification", "SimpleCNN")
    assert {f"{n}.pth" for n in needed} <= set(LISTED)


@pytest.mark.parametrize("name", sorted(LISTED))
def test_shipped_checkpoint_matches_manifest_and_loads(name):
    path = CKPT / name
    assert path.stat().st_size <= 5 * 2**20
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LISTED[name]
    assert torch.load(path, weights_only=True)["model"] == path.stem  # file named after its registry entry
    model = load_model(path)
    if hasattr(model, "classes"):  # the classifiers know the synthetic clips' class names
        assert list(model.classes) == list(CLASSES)


def test_shipped_p_codec_codes_its_i_frames_with_the_shipped_intra_codec():
    p = torch.load(CKPT / "LRAE_RD_P.pth", weights_only=True)
    intra = torch.load(CKPT / "LRAE_RD.pth", weights_only=True)
    inner = {k[len("intra."):]: v for k, v in p["state_dict"].items() if k.startswith("intra.")}
    assert inner.keys() == intra["state_dict"].keys()
    assert all(torch.equal(inner[k], v) for k, v in intra["state_dict"].items())
    assert all(torch.equal(p["extra"]["codec"][k], v) for k, v in intra["extra"]["codec"].items())
