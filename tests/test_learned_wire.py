"""Learned-table wire mode (quant mode 2) for a model with quality levels (LRAE_RD), and the wire version."""

import json

import pytest
import torch

import evaluate
from codec import wire
from codec.learned import load_tables
from codec.packetize import FrameAssembly, codec_from_checkpoint, decode_frame, encode_frame, make_codec
from models import build_model, load_model
from models.rd_tables import add_tables, learned_codec
from network.reassembly import Reassembler
from playback.conceal import Player
from playback.output import DropLog
from receiver_decode import handle_packet
from utils.checkpoint import make_checkpoint, save_checkpoint

LEVELS = 3


@pytest.fixture(scope="module")
def rd():
    torch.manual_seed(0)
    model = build_model("LRAE_RD", latent_channels=8, width=16, levels=LEVELS).eval()
    return model, make_codec(model, learned_codec(model))


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("quality", range(LEVELS))
def test_packets_give_back_the_exact_latent_and_its_level(rd, x, quality):
    model, codec = rd
    packets = encode_frame(model, x, 7, codec, quality)
    assert len(packets) == 8 and all(wire.parse(p).header.quality == quality for p in packets)
    asm = decode_frame(packets, codec)
    z, mask = asm.result()
    with torch.no_grad():
        ref = torch.round(model.encode(x[None], quality))
        assert asm.quality == quality and torch.equal(mask, torch.ones(1, 8)) and torch.equal(z, ref)
        shown = Player(model).show(z, mask, quality=asm.quality)  # the level in the header reaches decode
        assert torch.equal(shown.x_hat, model.decode(ref, mask, quality=quality))
        if bool(ref.any()):  # level 0 of this untrained model rounds everything to 0: no level differs there
            assert not torch.equal(shown.x_hat, model.decode(ref, mask, quality=(quality + 1) % LEVELS))


def test_coded_bytes_are_the_priors_estimate(rd, x):
    """Payload = -log2 of the prior's likelihoods within 3 %, plus 4 B per channel (the coder's last word),
    plus per packet the header and the 2-byte length entry."""
    model, codec = rd
    for quality in range(LEVELS):
        packets = encode_frame(model, x, 0, codec, quality)
        with torch.no_grad():
            y = torch.round(model.encode(x[None], quality))
            estimate = -torch.log2(model.likelihood(y, torch.tensor([quality]))).sum().item() / 8
        framing = len(packets) * (wire.HEADER_SIZE + 2)
        coded = sum(map(len, packets)) - framing
        assert abs(coded - estimate) <= 0.03 * estimate + 4 * 8, (quality, coded, estimate)


def test_any_subset_of_packets_decodes(rd, x):
    """200 random subsets of one frame's packets: each received channel is exactly its latent, each lost one
    zero, and the decoder runs at the frame's level."""
    model, codec = rd
    packets = encode_frame(model, x, 0, codec, 1)
    with torch.no_grad():
        ref = torch.round(model.encode(x[None], 1))
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        keep = (torch.rand(8, generator=g) < 0.5).tolist()
        asm = decode_frame([p for p, k in zip(packets, keep) if k], codec, geometry=model.latent_shape(128, 128))
        z, mask = asm.result()
        assert mask[0].tolist() == [float(k) for k in keep] and torch.equal(z, ref * mask[:, :, None, None])
        assert asm.quality == (1 if any(keep) else None)
    with torch.no_grad():
        assert bool(torch.isfinite(Player(model).show(z, mask, quality=asm.quality).x_hat).all())


def test_a_frame_with_two_levels_or_an_unknown_level_is_refused(rd, x):
    model, codec = rd
    a, b = encode_frame(model, x, 0, codec, 0), encode_frame(model, x, 0, codec, 2)
    asm = FrameAssembly(codec, model.latent_shape(128, 128))
    asm.add(wire.parse(a[0]))
    with pytest.raises(wire.PacketError, match="at quality 2, its other packets at 0"):
        asm.add(wire.parse(b[1]))
    hd = wire.parse(a[0]).header
    bad = wire.pack(wire.Header(**{**hd.__dict__, "quality": LEVELS}), list(wire.parse(a[0]).entries))
    with pytest.raises(wire.PacketError, match="levels 0..2"):
        decode_frame([bad], codec)
    with pytest.raises(ValueError, match="quality"):
        encode_frame(model, x, 0, codec, LEVELS)


def test_version_1_packet_is_a_counted_drop(rd, x):
    model, codec = rd
    packet = bytearray(encode_frame(model, x, 0, codec, 0)[0])
    v1 = bytes(packet[:4]) + b"\x01" + bytes(packet[5:38]) + bytes(packet[39:])  # the old layout
    drops = DropLog()
    assert handle_packet(v1, None, Reassembler(codec), drops, 100.0) == ([], False)
    assert drops.counts == {"version": 1}


def test_tables_in_the_checkpoint(rd, tmp_path):
    """Integer tensors in ckpt["extra"]["codec"] (weights_only), the codec reads them, the fingerprint covers
    them, a bad table is refused, and a model with levels needs them (and takes no --bits)."""
    model, codec = rd
    path = tmp_path / "rd.pth"
    save_checkpoint(path, make_checkpoint(model))
    with pytest.raises(ValueError, match="no learned entropy tables"):
        codec_from_checkpoint(model, torch.load(path, weights_only=True))
    add_tables(str(path))
    ckpt = torch.load(path, weights_only=True)
    cal = ckpt["extra"]["codec"]
    assert all(v.dtype == torch.int64 for v in cal.values())
    loaded = codec_from_checkpoint(load_model(ckpt), ckpt)
    assert loaded.mode == wire.MODE_LEARNED and loaded.levels == LEVELS and loaded.fingerprint == codec.fingerprint
    tweaked = {**cal, "learned_tables": cal["learned_tables"].clone()}
    top = int(cal["learned_tables"][0, 0].argmax())
    tweaked["learned_tables"][0, 0, top - 1:top + 1] += torch.tensor([1, -1])  # still a valid table
    assert make_codec(model, tweaked).fingerprint != codec.fingerprint
    tweaked["learned_tables"][0, 0, 0] += 1
    with pytest.raises(ValueError, match="summing to 2"):
        load_tables(tweaked, 8, LEVELS)
    with pytest.raises(ValueError, match="levels"):
        load_tables(cal, 8, LEVELS + 1)
    with pytest.raises(ValueError, match="--bits"):
        make_codec(model, cal, bits=4)


def test_evaluate_runs_an_rd_checkpoint_at_its_levels(rd, tmp_path):
    model, _ = rd
    path = tmp_path / "rd.pth"
    save_checkpoint(path, make_checkpoint(model))
    add_tables(str(path))
    out = evaluate.main(["--model-path", str(path), "--data", "sample", "--size", "64", "--max-frames", "3",
                         "--rates", "0,0.5", "--baselines", "jpeg", "--quality", "1", "--out", str(tmp_path / "e")])
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["quant_mode"] == "learned" and res["config"]["quality"] == 1
    ours = [r for r in res["results"] if r["method"] == "ours"]
    assert [r["params"]["quality"] for r in ours] == [1, 1] and ours[0]["psnr"] > ours[1]["psnr"]
    assert sorted(r["quality"] for r in res["rd"] if r["method"] == "ours") == list(range(LEVELS))
