"""I/P streams (playback/inter.py, wire flag bit 2): P-frame packets, the receiver's decode, and the sender's
mirror of it with feedback - equal to the receiver's frame after 30 frames at 10 % loss."""

import pytest
import torch

from codec.packetize import codec_from_checkpoint, decode_frame, make_codec
from codec.wire import PacketError, parse
from models import build_model
from models.base import as_shown
from models.rd_tables import learned_codec
from network.loss import LossEmulator
from playback.inter import InterEncoder, InterPlayer, Mirror

TINY = {"intra_kwargs": {"latent_channels": 8, "width": 16, "blocks": 1, "up_width": 8, "levels": 3}}
SIDE = 32


@pytest.fixture(scope="module", params=["LRAE_VC_P", "LRAE_RD_P"])
def stream(request):
    """Each inter codec (LRAE_VC_P with weights that read the reference, as a trained one has; LRAE_RD_P,
    which predicts in the latent), its codec and a moving clip."""
    torch.manual_seed(0)
    model = build_model(request.param, **TINY)
    if request.param == "LRAE_VC_P":
        with torch.no_grad():
            for w in (model.encoder[0].weight[:, 3:], model.decoder[0].weight[:, 16:], model.project4.weight):
                w.normal_(std=0.05)
            model.merge_gate.fill_(0.3)
    else:  # symbols of a few units, as a trained codec's (an untrained one's round to 0 and never change)
        with torch.no_grad():
            model.intra.log_gain.add_(3.0)
    model.eval()
    codec = codec_from_checkpoint(model, {"extra": {"codec": learned_codec(model.intra),
                                                    "p_codec": learned_codec(model)}})
    g = torch.Generator().manual_seed(1)
    scene = torch.rand(1, 3, SIDE, SIDE + 40, generator=g)
    clip = [scene[..., t:t + SIDE] for t in range(40)]  # a pan
    return model, codec, clip


def play(model, codec, clip, loss: str, delay: int = 1, feedback: bool = True, gop: int = 0,
         feedback_lost=lambda t: False):
    """Sender and receiver in one loop: frame t's feedback reaches the sender before frame t + 1 + delay."""
    geometry = (8, SIDE // 8, SIDE // 8)
    encoder = InterEncoder(model, codec, geometry, gop=gop, feedback=feedback)
    player, emulator = InterPlayer(model), LossEmulator(loss, seed=3)
    shown, types, pending = [], [], []
    for t, x in enumerate(clip):
        while pending and pending[0][0] <= t:
            _, index, mask = pending.pop(0)
            encoder.ack(index, mask)
        packets, inter = encoder.encode(x, t, quality=t % 3)
        kept = [p for p, ok in zip(packets, emulator.pattern(t, len(packets))) if ok]
        asm = decode_frame(kept, codec, geometry)
        z, mask = asm.result()
        shown.append(player.show(z, mask, asm.inter, asm.quality, index=t, ref_age=asm.ref_age).x_hat)
        types.append(inter)
        if feedback and not feedback_lost(t):
            pending.append((t + 1 + delay, t, mask))
    for _, index, mask in pending:
        encoder.ack(index, mask)
    return encoder, shown, types


def test_p_frame_packets_carry_the_flag_and_need_the_p_codec(stream):
    model, codec, clip = stream
    encoder = InterEncoder(model, codec, (8, 4, 4))
    i_packets, i_type = encoder.encode(clip[0], 0, quality=1)
    p_packets, p_type = encoder.encode(clip[1], 1, quality=1)
    assert (i_type, p_type) == (False, True)
    assert not parse(i_packets[0]).header.inter and all(parse(p).header.inter for p in p_packets)
    assert parse(p_packets[0]).header.fingerprint == codec.inter.fingerprint != codec.fingerprint
    assert decode_frame(p_packets, codec).inter is True
    intra_only = make_codec(model.intra, {**learned_codec(model.intra)})
    decode_frame(i_packets, intra_only)
    with pytest.raises(PacketError, match="P-frame packet, but this receiver's model has no P-frame codec"):
        decode_frame(p_packets, intra_only)


def test_mirror_equals_the_receiver_after_30_frames_at_10_percent_loss(stream):
    model, codec, clip = stream
    encoder, shown, types = play(model, codec, clip[:30], "random:0.1")
    assert types[0] is False and all(types[1:]), "one I-frame, then P-frames"
    assert torch.equal(encoder.mirror.reference(), shown[-1])
    # the loss mattered: decoding every frame as if all arrived gives other pictures (LRAE_RD_P's last frame
    # may equal its clean decode: a residual coded after the feedback puts the latent back exactly)
    _, clean, _ = play(model, codec, clip[:30], "none")
    assert any(not torch.equal(a, b) for a, b in zip(clean, shown))


def test_without_feedback_the_sender_drifts_from_the_receiver(stream):
    model, codec, clip = stream
    encoder, shown, _ = play(model, codec, clip[:30], "random:0.1", feedback=False)
    assert not torch.equal(encoder.mirror.reference(), shown[-1])
    assert len(encoder.mirror.frames) == 1, "without feedback the mirror keeps only the last frame"


def test_lost_feedback_forces_an_intra_frame_that_resyncs(stream):
    model, codec, clip = stream
    encoder, shown, types = play(model, codec, clip, "random:0.1", feedback_lost=lambda t: 3 <= t < 6)
    first_resync = next(t for t, inter in enumerate(types) if t > 0 and not inter)
    assert first_resync == 3 + encoder.mirror.window + 1, "frame 3's mask stayed unknown for a whole window"
    assert torch.equal(encoder.mirror.reference(), shown[-1]), "in step again after the I-frame"
    assert types[first_resync + 1:].count(False) == 0, "one I-frame was enough"


def test_gop_inserts_periodic_intra_frames(stream):
    model, codec, clip = stream
    _, _, types = play(model, codec, clip[:12], "none", gop=5)
    assert [t for t, inter in enumerate(types) if not inter] == [0, 5, 10]


def test_nothing_received_repeats_the_last_frame_on_both_sides(stream):
    model, codec, clip = stream
    player = InterPlayer(model)
    mirror = Mirror(model, (8, 4, 4))
    x0 = player.show(torch.zeros(1, 8, 4, 4), torch.ones(1, 8), False, 0).x_hat
    mirror.sent(0, torch.zeros(1, 8, 4, 4), False, 0)
    out = player.show(torch.zeros(1, 8, 4, 4), torch.zeros(1, 8), None, None)
    mirror.sent(1, torch.ones(1, 8, 4, 4), True, 0)
    mirror.ack(0, torch.ones(1, 8))
    mirror.ack(1, torch.zeros(1, 8))
    assert out.concealment == "repeat_last" and torch.equal(out.x_hat, x0)
    assert torch.equal(mirror.reference(), x0) and torch.equal(as_shown(x0), x0)


def test_evaluate_runs_the_ip_stream_beside_its_intra_codec(stream, tmp_path):
    """evaluate.py on an inter checkpoint: its intra codec as ours (and ours+copy), its I/P stream with feedback
    as ours-p through the same packets and loss draws, RD curves of both and the BD-rate of ours-p vs ours."""
    import json

    import evaluate
    from utils.checkpoint import make_checkpoint, save_checkpoint

    model, _, _ = stream
    path = save_checkpoint(tmp_path / "p.pth", make_checkpoint(model, extra={
        "codec": learned_codec(model.intra), "p_codec": learned_codec(model)}))
    out = evaluate.main(["--model_path", str(path), "--data", "sample", "--size", "32", "--max-frames", "6",
                         "--loss", "none", "random:0.2", "--baselines", "jpeg", "--gop", "4", "--out",
                         str(tmp_path / "eval")])
    payload = json.loads((out / "results.json").read_text())
    rows = {(r["method"], r["loss_model"]): r for r in payload["results"]}
    assert {"ours", "ours+copy", "ours-p", "jpeg"} <= {m for m, _ in rows}
    p_row = rows["ours-p", "random:0.2"]
    assert p_row["params"]["p_frames"] == 4 and p_row["params"]["feedback_delay"] == 1, "I P P P I P"
    assert payload["config"]["inter"] == {"gop": 4, "feedback": True, "feedback_delay": 1, "reference": "auto"}
    assert {p["method"] for p in payload["rd"]} >= {"ours", "ours-p"}
    assert len([p for p in payload["rd"] if p["method"] == "ours-p"]) == model.levels
    assert any(b["method"] == "ours-p" and b["anchor"] == "ours" for b in payload["bd_rate_clean"])
    assert rows["ours-p", "none"]["fresh_frames"] == 1.0
