"""Rate control over quality levels (codec/rate.py, sender_encode.py --kbps / --quality).

The sizes are real: the shipped LRAE_RD (checkpoints/LRAE_RD.pth, 6 quality levels, learned tables) codes
the 120 frames of the sample clip (224x224, 8 channels per packet, headers included) at every level; the
targets lie between neighbouring levels, where the controller must alternate them.
"""

import dataclasses
import json
import socket
from pathlib import Path

import pytest
import torch

import sender_encode
from codec.packetize import encode_latent, packetize_latent
from codec.rate import RateController
from data import read_frames
from models import build_model
from models.stack import load_stack
from utils.checkpoint import make_checkpoint, save_checkpoint

FPS = 30.0
CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "LRAE_RD.pth"


@pytest.fixture(scope="module")
def stack():
    torch.set_num_threads(1)
    return load_stack(str(CHECKPOINT))


@pytest.fixture(scope="module")
def sizes(stack):
    """(120, levels) bytes of each frame's packets at each level, as the sender codes them."""
    clip = torch.stack(list(read_frames("sample", size=224))).float() / 255.0
    model, codec = stack.model, dataclasses.replace(stack.codec, channels_per_packet=8)
    out = torch.zeros(len(clip), codec.levels)
    with torch.no_grad():
        for q in range(codec.levels):
            z = encode_latent(model, clip, codec, q)
            out[:, q] = torch.tensor([sum(map(len, packetize_latent(zf, f, codec, quality=q)))
                                      for f, zf in enumerate(z)], dtype=torch.float32)
    return out


def between(sizes, level: int) -> float:
    """Bytes per frame halfway (geometrically) between the mean sizes of ``level`` and ``level + 1``."""
    means = sizes.mean(dim=0)
    return float((means[level] * means[level + 1]).sqrt())


def kbps(total_bytes: float, frames: int) -> float:
    return total_bytes * 8 / 1000 * FPS / frames


@pytest.mark.parametrize("level", [0, 2, 4])
def test_controller_holds_the_target_within_5_percent(sizes, level):
    levels = sizes.shape[1]
    target_bytes = between(sizes, level)
    target = kbps(target_bytes, 1)
    control = RateController(target, FPS, levels)
    control.start(sizes[0].tolist())
    sent, used = 0.0, set()
    for f in range(len(sizes)):
        q = control.choose()
        control.update(q, float(sizes[f, q]))
        sent += float(sizes[f, q])
        used.add(q)
    assert abs(kbps(sent, len(sizes)) - target) <= 0.05 * target
    assert len(used) >= 2, "a target between two levels is held by alternating them"


def test_levels_form_a_ladder(sizes):
    """Each level dearer than the one below, the top one several times the bottom one (a rate to control)."""
    means = sizes.mean(dim=0)
    assert bool((means[1:] > means[:-1]).all()) and means[-1] > 2.5 * means[0], means.tolist()


def test_sender_holds_kbps_over_the_clip(sizes):
    """sender_encode.py --kbps over UDP: 120 frames, the summary's achieved kbit/s within 5 % of the target."""
    target = kbps(between(sizes, 2), 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        summary = sender_encode.main(["--model-path", str(CHECKPOINT), "--transport", "udp", "--port",
                                      str(sink.getsockname()[1]), "--kbps", str(target), "--fps", str(FPS),
                                      "--channels-per-packet", "8", "--deadline-ms", "0"])
    assert summary["frames"] == 120 and summary["kbps_target"] == pytest.approx(target, abs=0.01)
    assert abs(summary["kbps_encoded"] - target) <= 0.05 * target
    assert 2 <= summary["quality_mean"] <= 3
    json.dumps(summary)


def test_fixed_quality_and_refusals(stack, tmp_path):
    levels = stack.codec.levels
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        port = str(sink.getsockname()[1])
        common = ["--transport", "udp", "--port", port, "--fps", "0", "--max-frames", "3"]
        summary = sender_encode.main(["--model-path", str(CHECKPOINT), "--quality", "1", *common])
        assert summary["quality_mean"] == 1 and summary["kbps_encoded"] is None
        with pytest.raises(SystemExit, match=f"quality must be 0..{levels - 1}"):
            sender_encode.main(["--model-path", str(CHECKPOINT), "--quality", str(levels), *common])
        torch.manual_seed(0)
        one = tmp_path / "lrae.pth"
        save_checkpoint(one, make_checkpoint(build_model("LRAE_VC").eval()))
        with pytest.raises(SystemExit, match="--kbps needs a model with quality levels; LRAE_VC has one"):
            sender_encode.main(["--model-path", str(one), "--kbps", "100", *common])
