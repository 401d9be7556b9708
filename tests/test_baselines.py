"""Classic baselines: packets, shared loss draws, freeze rule, H.264 reference chain, FEC, byte matching."""

import numpy as np
import pytest
import torch

from evaluation import methods
from evaluation.baselines import ImageCodec, decode_image
from evaluation.h264 import chain_ok, encode_h264, fec_layout, fec_parity, matched_h264
from evaluation.methods import make_baseline
from evaluation.packets import GREY, as_frames, n_packets, play
from network.loss import draws as loss_draws
from network.loss import parse_loss

N, SIZE = 8, 64


@pytest.fixture(scope="module")
def clip():
    """8 textured 64x64 frames whose content changes from frame to frame."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    rng = np.random.default_rng(0)
    frames = []
    for t in range(N):
        r = 128 + 80 * np.sin((xx + 3 * t) / 5.0)
        g = 128 + 80 * np.cos((yy - 2 * t) / 4.0)
        b = (xx * yy / 8.0 + 20 * t) % 256
        img = np.stack([r, g, b], -1) + rng.normal(0, 12, (SIZE, SIZE, 3))
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


@pytest.fixture(scope="module")
def gop4(clip):
    return encode_h264(clip, crf=23, keyint=4)


def no_loss(slots=64):
    return torch.ones(N, slots)


def test_n_packets():
    assert [n_packets(b) for b in (0, 1, 1200, 1201, 2400, 2401)] == [0, 1, 1, 2, 2, 3]
    assert n_packets(100, mtu=30) == 4


def test_play_freezes_and_starts_grey():
    frames = {f: np.full((2, 2, 3), 10 * f, np.uint8) for f in range(5)}
    shown, ms = play([False, True, False, False, True], frames.__getitem__, (2, 2))
    assert [int(s[0, 0, 0]) for s in shown] == [GREY, 10, 10, 10, 40]
    assert ms >= 0
    shown, ms = play([False, False], frames.__getitem__, (2, 2))
    assert (shown == GREY).all() and np.isnan(ms)


def test_jpeg_any_lost_packet_freezes(clip):
    table = ImageCodec(clip, "jpeg")
    data, _ = table.encoded(90)  # ~2.6 KB: 3 packets per frame
    draws = no_loss()
    draws[0, 2] = 0  # first frame lost -> grey
    draws[3, 1] = 0  # frame 3 lost -> frame 2 stays
    draws[5, 63] = 0  # an unused slot: no effect
    res = table.run(draws, 90)
    assert res.packets.tolist() == [3] * N and res.nbytes.tolist() == [len(d) for d in data]
    assert res.fresh.tolist() == [False, True, True, False, True, True, True, True]
    assert (res.frames[0] == GREY).all()
    assert np.array_equal(res.frames[3], decode_image(data[2]))
    for f in (1, 2, 4, 5, 6, 7):
        assert np.array_equal(res.frames[f], decode_image(data[f]))
    assert res.psnr(clip).shape == (N,) and res.encode_ms > 0 and res.decode_ms > 0


def test_too_few_slots_is_an_error(clip):
    with pytest.raises(ValueError, match="slots"):
        ImageCodec(clip, "jpeg").run(no_loss(slots=2), 90)


def test_matched_quality_finds_the_quality_that_made_the_target(clip):
    table = ImageCodec(clip, "jpeg")
    for q in (12, 50, 85):
        assert table.matched_quality(table.mean_bytes(q)) == q
    assert len(table._cache) < 30  # bisection, not an encode of every quality
    assert table.matched_quality(1e9) == 100 and table.matched_quality(0) == 1


def test_best_quality_prefers_fewer_packets_under_loss(clip):
    table = ImageCodec(clip, "jpeg")
    draws = no_loss()
    draws[:, 1] = 0  # every frame loses its second packet: only 1-packet frames survive
    target = table.mean_bytes(95)
    res = table.run_best(draws, target)
    one_packet = [q for q in range(1, 96) if max(len(d) for d in table.encoded(q)[0]) <= 1200]
    assert res.params["quality"] == max(one_packet) and res.fresh.all()
    assert res.nbytes.mean() <= target and not res.params["over_budget"]
    clean = table.run_best(no_loss(), target)
    assert clean.params["quality"] == 95
    assert table.run_best(no_loss(), 10.0).params["over_budget"]


def test_h264_low_delay_stream(clip, gop4):
    assert gop4.keyframe.tolist() == [True, False, False, False] * 2
    res = gop4.run(no_loss())
    assert res.fresh.all() and res.frames.shape == (N, SIZE, SIZE, 3)
    assert res.psnr(clip).min() > 20  # the clip carries uncodable noise (sigma 12)
    assert np.array_equal(res.nbytes, gop4.sizes()) and res.encode_ms > 0 and res.decode_ms > 0


def test_h264_intra_codes_every_frame_alone(clip):
    res = make_baseline("h264-intra", clip, setting=23)(no_loss())
    assert res.params["keyint"] == 1 and res.fresh.all() and res.psnr(clip).min() > 20
    lost = no_loss()
    lost[2] = 0  # frame 2 lost entirely: the frames after it still decode (no reference chain)
    after = make_baseline("h264-intra", clip, setting=23)(lost)
    assert after.fresh.tolist() == [True, True, False] + [True] * (N - 3)


def test_h264_reference_chain(gop4):
    assert chain_ok([1, 0, 1, 1, 1, 1], [1, 0, 0, 0, 1, 0]).tolist() == [True, False, False, False, True, True]
    clean, _ = gop4.decoded()
    draws = no_loss()
    draws[1, 0] = 0  # frame 1 lost: 1..3 broken, frame 4 (I) fresh again
    res = gop4.run(draws)
    assert res.intact.tolist() == [True, False] + [True] * 6
    assert res.fresh.tolist() == [True, False, False, False, True, True, True, True]
    for f in (1, 2, 3):
        assert np.array_equal(res.frames[f], clean[0])
    for f in (0, 4, 5, 6, 7):
        assert np.array_equal(res.frames[f], clean[f])
    draws[0, 0] = 0  # the first I-frame lost too: grey until frame 4
    res = gop4.run(draws)
    assert (res.frames[:4] == GREY).all() and np.array_equal(res.frames[4], clean[4])


def test_fec_counts():
    assert [fec_parity(k, 0.2) for k in (1, 2, 4, 5, 8, 9)] == [1, 1, 1, 2, 2, 3]
    assert [fec_parity(k, 0.5) for k in (1, 3)] == [1, 3]
    assert fec_parity(7, 0.0) == 0
    assert fec_layout(2500, 0.2) == (3, 1, 2500 + 834)
    assert fec_layout(2500, 0.0) == (3, 0, 2500)
    with pytest.raises(ValueError):
        fec_parity(3, 1.0)


@pytest.mark.parametrize("r", [0.2, 0.5])
def test_fec_recovers_up_to_p_losses(gop4, r):
    lay = gop4.layout(r)
    draws = no_loss()
    k4, p4 = lay[4, :2]
    draws[4, :p4] = 0  # I-frame 4 loses exactly p packets (data first): recovered
    k1, p1 = lay[1, :2]
    draws[1, k1 + p1 - 1] = 0  # one parity packet of frame 1: recovered
    k6, p6 = lay[6, :2]
    draws[6, : p6 + 1] = 0  # frame 6 loses p + 1: broken, and 7 with it
    res = gop4.run(draws, fec=r)
    assert res.fresh.tolist() == [True] * 6 + [False, False]
    assert res.intact.tolist() == [True] * 6 + [False, True]
    assert np.array_equal(res.packets, lay[:, 0] + lay[:, 1])
    assert np.array_equal(res.nbytes, lay[:, 2]) and (res.nbytes > gop4.sizes()).all()


def test_matched_h264_hits_the_byte_target(clip):
    ref = encode_h264(clip, crf=30, keyint=4)
    for fec in (0.0, 0.5):
        target = ref.mean_bytes(fec)
        s = matched_h264(clip, target, fec=fec, keyint=4)
        assert s.mean_bytes(fec) == pytest.approx(target, rel=0.02)


def test_all_methods_consume_the_same_draws(clip):
    draws = loss_draws(parse_loss("random:0.3"), N, 64, seed=3)
    shuffled = draws.clone()
    shuffled[:, 20:] = 1 - shuffled[:, 20:]  # slots no method uses here
    for m in methods.of_kind("baseline"):
        method, fec = m.name, m.fec
        run = make_baseline(method, clip, target_bytes=1500.0, qualities=range(5, 101, 5))
        res = run(draws)
        assert res.method == method and res.frames.shape == (N, SIZE, SIZE, 3) and res.frames.dtype == np.uint8
        # packets = k + parity(k), increasing in k: recover the parity count of each frame
        parity = [next(t - k for k in range(t + 1) if k + fec_parity(k, fec) == t) for t in res.packets]
        lost = [(draws[f, : res.packets[f]] == 0).sum().item() for f in range(N)]
        assert res.intact.tolist() == [lost[f] <= parity[f] for f in range(N)]
        again = run(shuffled)
        assert np.array_equal(again.frames, res.frames) and np.array_equal(again.fresh, res.fresh)


def test_as_frames_layouts(clip):
    t = torch.from_numpy(clip).permute(0, 3, 1, 2)
    assert np.array_equal(as_frames(t), clip)
    assert np.array_equal(as_frames(t.float() / 255), clip)
    assert np.array_equal(as_frames(list(clip)), clip)


def test_registry_derives_groups_styles_and_sweeps():
    assert methods.groups() == {"jpeg": ("jpeg", "jpeg-best"), "webp": ("webp",), "h264": ("h264",),
                                "h264-intra": ("h264-intra",), "h264-fec": ("h264-fec20", "h264-fec50")}
    assert {m.name: m.fec for m in methods.of_kind("baseline") if m.fec} == {"h264-fec20": 0.2, "h264-fec50": 0.5}
    assert [m.name for m in methods.of_kind("ours")] == ["ours", "ours+convlstm", "ours+copy", "ours-p"]
    styles = [m.style for m in methods.METHODS.values()]
    assert len(set(styles)) == len(styles) and methods.style("not-a-method") == methods.FALLBACK_STYLE
    assert methods.strip_methods() == ["ours", "ours+convlstm", "ours-p", "jpeg", "h264"]
    for m in methods.of_kind("baseline"):
        assert m.build is not None and bool(m.sweep) == (m.sweep_key is not None)
    with pytest.raises(ValueError, match="registered twice"):
        methods.register(methods.METHODS["jpeg"])
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline("ours", np.zeros((1, 8, 8, 3), np.uint8))


def test_parse_baselines_expands_registry_groups():
    from evaluation.runner import parse_baselines

    assert parse_baselines("jpeg,h264-fec") == ["jpeg", "jpeg-best", "h264-fec20", "h264-fec50"]
    assert parse_baselines("webp-best,none,jpeg-best,jpeg") == ["webp-best", "jpeg-best", "jpeg"]
    with pytest.raises(ValueError, match="unknown baseline"):
        parse_baselines("mpeg2")


def test_no_import_cycle_between_image_and_h264_code():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "evaluation"
    for name in ("packets", "baselines", "h264"):
        tree = ast.parse((root / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        others = {"evaluation.baselines", "evaluation.h264", "evaluation.methods", "evaluation.runner"}
        assert imported & others == set(), (name, imported & others)
