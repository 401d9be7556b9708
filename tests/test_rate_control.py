"""Rate control over quality levels (codec/rate.py, sender_encode.py --kbps / --quality).

The sizes are real: a tiny LRAE_RD whose transforms are untrained (seeded) and whose priors are fitted for
100 seeded steps to its own latents of 8 sample frames, so the levels' learned tables differ (with the
untrained priors' near-uniform tables every level costs the same bytes, and no target could be held).
Its learned tables code the 120 frames of the sample clip (224x224, the 8 channels in one packet) at
80..220 B per frame from level 0 to 3.
"""

import json
import socket

import pytest
import torch

import sender_encode
from codec.packetize import encode_latent, make_codec, packetize_latent
from codec.rate import RateController
from data import read_frames
from models import build_model
from models.rd_tables import add_tables
from utils.checkpoint import make_checkpoint, save_checkpoint

LEVELS, FPS = 4, 30.0


@pytest.fixture(scope="module")
def clip():
    return torch.stack(list(read_frames("sample", size=224))).float() / 255.0


@pytest.fixture(scope="module")
def model(clip):
    torch.manual_seed(0)
    m = build_model("LRAE_RD", latent_channels=8, width=16, levels=LEVELS).eval()
    with torch.no_grad():
        # the untrained encoder's latent is small (~0.04): gains of 2^1..2^2.5 make the levels' symbols
        # span ~0.1..0.25 and their sizes spread evenly
        m.log_gain.copy_(torch.linspace(1.0, 2.5, LEVELS)[:, None].expand(LEVELS, 8))
        latents = [m.encode(clip[::15], q) for q in range(LEVELS)]
    priors = [p for n, p in m.named_parameters() if n.startswith("priors.")]
    opt = torch.optim.Adam(priors, lr=0.05)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        bits = sum(-torch.log2(m.priors[q].likelihood(y + torch.rand(y.shape, generator=g) - 0.5)).mean()
                   for q, y in enumerate(latents))
        opt.zero_grad()
        bits.backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("rd") / "LRAE_RD.pth"
    save_checkpoint(path, make_checkpoint(model))
    add_tables(str(path))
    return path


@pytest.fixture(scope="module")
def sizes(model, checkpoint, clip):
    """(120, LEVELS) bytes of each frame's packets at each level, as the sender codes them."""
    from models.stack import load_stack
    codec = make_codec(model, load_stack(str(checkpoint)).ckpt["extra"]["codec"], channels_per_packet=8)
    out = torch.zeros(len(clip), LEVELS)
    with torch.no_grad():
        for q in range(LEVELS):
            z = encode_latent(model, clip, codec, q)
            out[:, q] = torch.tensor([sum(map(len, packetize_latent(zf, f, codec, quality=q)))
                                      for f, zf in enumerate(z)], dtype=torch.float32)
    return out


def kbps(total_bytes: float, frames: int) -> float:
    return total_bytes * 8 / 1000 * FPS / frames


@pytest.mark.parametrize("target_bytes", [110.0, 150.0, 190.0])
def test_controller_holds_the_target_within_5_percent(sizes, target_bytes):
    lo, hi = float(sizes[:, 0].mean()), float(sizes[:, -1].mean())
    assert lo < 0.75 * target_bytes and hi > 1.1 * target_bytes, "the levels must bracket the target"
    target = kbps(target_bytes, 1)
    control = RateController(target, FPS, LEVELS)
    control.start(sizes[0].tolist())
    sent, used = 0.0, set()
    for f in range(len(sizes)):
        q = control.choose()
        control.update(q, float(sizes[f, q]))
        sent += float(sizes[f, q])
        used.add(q)
    assert abs(kbps(sent, len(sizes)) - target) <= 0.05 * target
    assert len(used) >= 2, "a target between two levels is held by alternating them"


def test_sender_holds_kbps_over_the_clip(checkpoint, sizes):
    """sender_encode.py --kbps over UDP: 120 frames, the summary's achieved kbit/s within 5 % of the target."""
    target = kbps(150.0, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        summary = sender_encode.main(["--model-path", str(checkpoint), "--transport", "udp", "--port",
                                      str(sink.getsockname()[1]), "--kbps", str(target), "--fps", str(FPS),
                                      "--channels-per-packet", "8", "--deadline-ms", "0"])
    assert summary["frames"] == 120 and summary["kbps_target"] == target
    assert abs(summary["kbps_encoded"] - target) <= 0.05 * target
    assert 0 < summary["quality_mean"] < LEVELS - 1
    json.dumps(summary)


def test_fixed_quality_and_refusals(checkpoint, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        port = str(sink.getsockname()[1])
        common = ["--transport", "udp", "--port", port, "--fps", "0", "--max-frames", "3"]
        summary = sender_encode.main(["--model-path", str(checkpoint), "--quality", "1", *common])
        assert summary["quality_mean"] == 1 and summary["kbps_encoded"] is None
        with pytest.raises(SystemExit, match="quality must be 0..3"):
            sender_encode.main(["--model-path", str(checkpoint), "--quality", "4", *common])
        torch.manual_seed(0)
        one = tmp_path / "lrae.pth"
        save_checkpoint(one, make_checkpoint(build_model("LRAE_VC").eval()))
        with pytest.raises(SystemExit, match="--kbps needs a model with quality levels; LRAE_VC has one"):
            sender_encode.main(["--model-path", str(one), "--kbps", "100", *common])
