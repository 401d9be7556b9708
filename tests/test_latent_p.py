"""LRAE_RD_P (models/latent_p.py): P-frames as the residual of the intra codec's latent against the
receiver's, and fitting its priors (models/fit_latent_p.py)."""

import pytest
import torch

from models import build_model, load_codec_model
from models.fit_latent_p import fit_priors, residuals
from playback.inter import InterPlayer, next_frame

TINY = {"intra_kwargs": {"latent_channels": 8, "width": 16, "blocks": 1, "up_width": 8, "levels": 3}}
GEOMETRY = (8, 4, 4)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("LRAE_RD_P", **TINY).eval()


def clip(n=6, seed=0):
    """A slow pan over a random scene: (n,3,32,32)."""
    scene = torch.rand(1, 3, 32, 32 + n, generator=torch.Generator().manual_seed(seed))
    return torch.cat([scene[..., t:t + 32] for t in range(n)])


def chain(model, frames, levels, masks=None):
    """Play I P P ... (every frame's residual as the encoder codes it against the receiver's state)."""
    state, shown = model.initial_state(GEOMETRY), []
    for t, (x, q) in enumerate(zip(frames, levels)):
        inter = t > 0
        y = model.encode_inter(x[None], state, q) if inter else model.intra.encode(x[None], q)
        mask = torch.ones(1, 8) if masks is None else masks[t]
        z = torch.round(y) * mask[:, :, None, None]
        state, _ = next_frame(model, z, mask, inter, q, state)
        shown.append(state)
    return shown


def test_registered_as_inter_codec_over_its_intra(model):
    assert model.kind == "inter" and model.intra.kind == "frame"
    assert (model.latent_channels, model.levels, model.stride) == (8, 3, 8)
    assert len(model.priors) == model.levels
    with pytest.raises(ValueError, match="not a frame codec with quality levels"):
        build_model("LRAE_RD_P", intra="LRAE_VC")


@torch.no_grad()
def test_with_nothing_lost_every_frame_is_the_intra_codecs_decode_even_across_level_switches(model):
    frames, levels = clip(), [2, 2, 0, 1, 1, 2]
    for x, q, state in zip(frames, levels, chain(model, frames, levels)):
        y = torch.round(model.intra.encode(x[None], q))
        assert torch.equal(state.latent, y) and state.level == q
        assert torch.equal(state.shown, torch.round(model.intra.decode(y, None, q).clamp(0, 1) * 255) / 255)


@torch.no_grad()
def test_a_repeated_frame_costs_only_zero_residuals(model):
    x = clip(1)
    state = chain(model, x, [1])[0]
    assert torch.equal(torch.round(model.encode_inter(x, state, 1)), torch.zeros(1, *GEOMETRY))


@torch.no_grad()
def test_a_lost_channel_keeps_its_last_value_and_the_decoder_sees_the_channels_ever_received(model):
    frames = clip(3)
    first = torch.ones(1, 8)
    first[0, 5] = 0.0  # channel 5 never arrives in the I-frame
    second = torch.ones(1, 8)
    second[0, 2] = 0.0  # channel 2's residual is lost in frame 1
    states = chain(model, frames, [1, 1, 1], [first, second, torch.ones(1, 8)])
    assert torch.equal(states[0].seen, first) and torch.equal(states[0].latent[0, 5], torch.zeros(4, 4))
    assert torch.equal(states[1].latent[0, 2], states[0].latent[0, 2]), "the lost residual: the last value"
    y1 = torch.round(model.intra.encode(frames[1:2], 1))
    assert torch.equal(states[1].latent[0, :2], y1[0, :2])
    assert torch.equal(states[1].seen, torch.maximum(first, second))
    assert states[2].seen.all()
    y2 = torch.round(model.intra.encode(frames[2:3], 1))
    assert torch.equal(states[2].latent, y2), "the next residual, coded against the receiver's state, catches up"


def test_nothing_received_keeps_the_state(model):
    state = chain(model, clip(1), [0])[0]
    after, label = next_frame(model, torch.zeros(1, *GEOMETRY), torch.zeros(1, 8), None, None, state)
    assert after is state and label == "repeat_last"
    player = InterPlayer(model)
    player.show(torch.ones(1, *GEOMETRY), torch.ones(1, 8), False, 0)
    part = torch.ones(1, 8)
    part[0, 0] = 0
    assert player.show(torch.ones(1, *GEOMETRY), part, True, 0).concealment == "copy_fill"


def test_fitting_the_priors_lowers_the_rate_of_residuals(model):
    torch.manual_seed(0)
    fresh = build_model("LRAE_RD_P", **TINY).eval()
    fresh.intra.load_state_dict(model.intra.state_dict())
    clips = [clip(8, seed) for seed in range(2)]
    r = residuals(fresh, clips, 2)
    with torch.no_grad():
        before = float(-torch.log2(fresh.likelihood(r, torch.full((len(r),), 2))).mean())
    bits = fit_priors(fresh, clips, steps=150, lr=0.05)
    with torch.no_grad():
        after = float(-torch.log2(fresh.likelihood(r, torch.full((len(r),), 2))).mean())
    assert len(bits) == 3 and after < 0.5 * before and abs(after - bits[2]) < 0.05


def test_fit_script_writes_a_streamable_checkpoint(tmp_path):
    from models.fit_latent_p import main
    from models.rd_tables import learned_codec
    from utils.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    intra = build_model("LRAE_RD", **TINY["intra_kwargs"])
    intra_path = save_checkpoint(tmp_path / "intra.pth", make_checkpoint(intra, extra={"codec": learned_codec(intra)}))
    out = tmp_path / "p.pth"
    main(["--intra", str(intra_path), "--data", "sample", "--size", "32", "--frames", "4", "--steps", "5",
          "--out", str(out)])
    model, codec, _ = load_codec_model(str(out))
    assert model.model_name == "LRAE_RD_P" and codec.inter is not None
    assert codec.inter.fingerprint != codec.fingerprint
    from PIL import Image

    Image.new("RGB", (40, 40), (90, 120, 30)).save(tmp_path / "photo.png")
    with pytest.raises(SystemExit, match="no clips of two or more frames"):
        main(["--intra", str(intra_path), "--data", str(tmp_path / "photo.png"), "--size", "32",
              "--out", str(tmp_path / "q.pth")])
    assert not (tmp_path / "q.pth").exists()


@torch.no_grad()
def test_the_dead_zone_sends_small_changes_as_zero_and_bounds_the_error(model):
    torch.manual_seed(0)
    dz = build_model("LRAE_RD_P", **TINY, deadzone=0.8).eval()
    dz.intra.load_state_dict(model.intra.state_dict())
    with torch.no_grad():
        dz.intra.log_gain.add_(3.0)  # symbols of a few units
    frames, levels = clip(), [2] * 6
    plain = torch.cat([torch.round(dz.residual(dz.intra.encode(frames[t:t + 1], 2),
                                               torch.round(dz.intra.encode(frames[t - 1:t], 2))))
                       for t in range(1, 6)])
    assert not bool((plain.abs() == 0).all()), "the clip moves"
    for x, state in zip(frames, chain(dz, frames, levels)):
        y = dz.intra.encode(x[None], 2)
        assert float((state.latent - y).abs().max()) < 0.8 + 1e-4, "within the dead zone of the intra latent"
    d = torch.tensor([0.3, 0.7, -0.79, 0.81, -1.6])
    assert dz.residual(d, torch.zeros(5)).tolist() == pytest.approx([0.0, 0.0, 0.0, 0.81, -1.6])
    assert model.residual(d, torch.zeros(5)).tolist() == pytest.approx(d.tolist()), "0.5: plain rounding"
    with pytest.raises(ValueError, match="deadzone must be in"):
        build_model("LRAE_RD_P", **TINY, deadzone=0.2)


@torch.no_grad()
def test_level_switches_keep_the_state_bounded_when_the_tables_clamp_the_residuals():
    """Symbols of a few units whose levels' inverse gains do not undo the gains (an untrained model): the
    prediction converts between levels by the gains alone, so clamped residuals cannot make it grow."""
    import warnings

    from codec.packetize import codec_from_checkpoint
    from models.rd_tables import learned_codec
    from playback.inter import InterEncoder

    torch.manual_seed(0)
    model = build_model("LRAE_RD_P", **TINY).eval()
    model.intra.log_gain.add_(3.0)
    codec = codec_from_checkpoint(model, {"extra": {"codec": learned_codec(model.intra),
                                                    "p_codec": learned_codec(model)}})
    encoder, frames = InterEncoder(model, codec, GEOMETRY, feedback=False), clip(30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in range(30):
            encoder.encode(frames[t:t + 1], t, quality=t % 3)
    latent = encoder.mirror.state().latent
    y = torch.round(model.intra.encode(frames[-1:], 2))
    assert float(latent.abs().max()) <= 2 * float(y.abs().max()) + 8


def stream_states(model, codec, frames, reference: str, loss: str = "random:0.2", delay: int = 1):
    """Sender (InterEncoder) and receiver (InterPlayer) frame by frame, feedback ``delay`` frames late; returns
    per frame (received mask, the receiver's latent, its reference age) and the encoder."""
    from codec.packetize import decode_frame
    from network.loss import LossEmulator
    from playback.inter import InterEncoder

    encoder = InterEncoder(model, codec, GEOMETRY, reference=reference)
    player, emulator, pending, out = InterPlayer(model), LossEmulator(loss, seed=5), [], []
    for t in range(len(frames)):
        while pending and pending[0][0] <= t:
            encoder.ack(*pending.pop(0)[1:])
        packets, _ = encoder.encode(frames[t:t + 1], t, quality=2)
        kept = [p for p, ok in zip(packets, emulator.pattern(t, len(packets))) if ok]
        asm = decode_frame(kept, codec, GEOMETRY)
        z, mask = asm.result()
        player.show(z, mask, asm.inter, asm.quality, index=t, ref_age=asm.ref_age)
        out.append((mask, player.state.latent.clone(), asm.ref_age))
        pending.append((t + 1 + delay, t, mask))
    for _, index, mask in pending:  # the last reports arrive after the stream
        encoder.ack(index, mask)
    return out, encoder, player


@torch.no_grad()
def test_coding_against_the_acknowledged_state_makes_every_received_channel_exact():
    """With feedback one frame late, a P-frame coded against the mirror's last state (latest) is wrong in a
    channel lost in the frame before (the receiver adds the residual to a value the sender thought had
    changed); coded against the newest acknowledged state (acked, age 1) every channel that arrives is the
    intra codec's latent exactly. Both keep the sender's mirror equal to the receiver."""
    from codec.packetize import codec_from_checkpoint
    from models.rd_tables import learned_codec

    torch.manual_seed(0)
    model = build_model("LRAE_RD_P", **TINY).eval()
    model.intra.log_gain.add_(3.0)
    codec = codec_from_checkpoint(model, {"extra": {"codec": learned_codec(model.intra),
                                                    "p_codec": learned_codec(model)}})
    frames = clip(24)
    target = torch.round(model.intra.encode(frames, 2))
    off = {}
    for reference in ("latest", "acked"):
        out, encoder, player = stream_states(model, codec, frames, reference)
        assert torch.equal(encoder.mirror.state().latent, player.state.latent)
        wrong = 0
        for t, (mask, latent, _) in enumerate(out):
            if t < 2:  # frame 1 is coded before any feedback: against the last state under either policy
                continue
            got = mask[0] > 0.5
            wrong += int((latent[0, got] != target[t, got]).any(dim=(1, 2)).sum())
        off[reference] = wrong
        ages = [age for _, _, age in out[2:]]
        assert set(ages) <= ({0} if reference == "latest" else {1}), ages
    assert off["acked"] == 0 and off["latest"] > 0, off


def test_residual_tables_span_every_change_the_intra_codec_can_send():
    """A catch-up after a loss or a scene cut can move a channel across the intra codec's whole range: the
    P tables reach that far (and the fitted prior still makes 0 the cheapest symbol)."""
    from codec.learned import load_tables
    from models.fit_latent_p import residual_codec
    from models.rd_tables import learned_codec

    torch.manual_seed(0)
    model = build_model("LRAE_RD_P", **TINY).eval()
    with torch.no_grad():
        model.intra.log_gain.add_(3.0)
    fit_priors(model, [clip(8)], steps=150, lr=0.05)
    intra = learned_codec(model.intra)
    tables = load_tables(residual_codec(model, intra), 8, 3)
    for q in range(3):
        for c in range(8):
            h = min(127, int(intra["learned_sizes"][q, c]))
            assert len(tables.tables[q][c]) == 2 * h + 1 and tables.offsets[q][c] == -h
            assert int(tables.tables[q][c].argmax()) == h, "0 is the likeliest residual"


@torch.no_grad()
def test_auto_reference_switches_to_the_acknowledged_state_under_heavy_loss_only():
    from codec.packetize import codec_from_checkpoint
    from models.rd_tables import learned_codec

    torch.manual_seed(0)
    model = build_model("LRAE_RD_P", **TINY).eval()
    codec = codec_from_checkpoint(model, {"extra": {"codec": learned_codec(model.intra),
                                                    "p_codec": learned_codec(model)}})
    frames = clip(12)
    clean, _, _ = stream_states(model, codec, frames, "auto", loss="none")
    lossy, encoder, player = stream_states(model, codec, frames, "auto", loss="random:0.3")
    assert {age for _, _, age in clean} == {0}
    assert [age for _, _, age in lossy[3:]] == [1] * 9, "30 % lost: against the state confirmed a frame ago"
    assert torch.equal(encoder.mirror.reference(), player.last)
