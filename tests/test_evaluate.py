"""evaluate.py: the results.json schema, shared loss draws, byte matching, determinism, inputs.

Tiny untrained models (LRAE_VC, and conv_lstm_ae around the same weights), 64x64 synthetic frames,
a few frames and two loss rates.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
from evaluation import runner as evaluation
from evaluation.baselines import ImageCodec
from models import build_model, load_codec_model
from network.loss import RandomLoss
from playback.conceal import DEFAULT_POLICY
from utils.checkpoint import make_checkpoint, save_checkpoint

SIZE = 64
DATA = ["--data", "synthetic:5,3", "--size", str(SIZE), "--max-frames", "8", "--rates", "0,0.3"]
KEYS = {"method", "loss_model", "loss_rate", "bytes_per_frame", "bpp", "psnr", "ssim", "ms_ssim", "ssim_db",
        "fresh_frames", "accuracy", "encode_ms", "decode_ms"}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    frame = build_model("LRAE_VC", width=16, up_width=8, blocks=1)
    temporal = build_model("conv_lstm_ae", ae="LRAE_VC", ae_kwargs=frame.config, hidden=4)
    temporal.ae.load_state_dict(frame.state_dict())
    classifier = build_model("SimpleCNN", width=4, input_size=32,
                             classes=["move_left", "move_right", "move_up", "move_down", "rotate_cw", "rotate_ccw",
                                      "grow", "shrink"])
    return {"frame": str(save_checkpoint(d / "lrae.pth", make_checkpoint(frame))),
            "temporal": str(save_checkpoint(d / "clstm.pth", make_checkpoint(temporal))),
            "classifier": str(save_checkpoint(d / "cls.pth", make_checkpoint(classifier))), "dir": d}


def run(ckpts, out, *extra):
    evaluate.main(["--model_path", ckpts["frame"], "--temporal", ckpts["temporal"], *DATA,
                   "--rd-bits", "3,4", "--out", str(out), *extra])
    return json.loads((out / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))


@pytest.fixture(scope="module")
def twice(ckpts):
    d = ckpts["dir"]
    return [run(ckpts, d / name, "--classifier", ckpts["classifier"]) for name in ("a", "b")]


def test_results_schema_and_files(twice, ckpts):
    res = twice[0]
    methods = {"original", "ours", "ours+convlstm", "ours+copy", "jpeg", "jpeg-best", "webp", "h264", "h264-fec20",
               "h264-fec50"}
    assert {r["method"] for r in res["results"]} == methods
    assert len(res["results"]) == 2 * len(methods)
    for r in res["results"]:
        assert KEYS <= set(r), KEYS - set(r)
        assert r["loss_model"] == "random" and r["loss_rate"] in (0.0, 0.3)
        assert r["ms_ssim"] is None  # 64 px frames are too small for MS-SSIM
        assert r["accuracy"] is not None and 0.0 <= r["accuracy"] <= 1.0
        if r["method"] != "original":
            assert r["psnr"] > 0 and 0 < r["ssim"] <= 1 and r["bytes_per_frame"] > 0 and r["encode_ms"] > 0
            assert r["bpp"] == pytest.approx(r["bytes_per_frame"] * 8 / SIZE**2, rel=1e-5)
        if r["loss_rate"] == 0.0:
            assert r["fresh_frames"] == 1.0
    cfg = res["config"]
    assert cfg["frames"] == 8 and cfg["split"] == "test" and cfg["rates"] == [0.0, 0.3] and cfg["size"] == SIZE
    assert {p["method"] for p in res["rd"]} == {"ours", "jpeg", "webp", "h264"}
    assert sorted(p["bits"] for p in res["rd"] if p["method"] == "ours") == [3, 4]
    out = ckpts["dir"] / "a"
    for name in ("results.md", "quality_vs_loss.png", "rd_curve.png", "strip.png"):
        assert (out / name).stat().st_size > 0, name
    assert "| ours+convlstm | 30 |" in (out / "results.md").read_text()


def without_timings(res):
    return {**res, "results": [{k: v for k, v in r.items() if k not in ("encode_ms", "decode_ms")}
                               for r in res["results"]]}


def test_same_seed_same_results_except_timings(twice):
    assert without_timings(twice[0]) == without_timings(twice[1])


def test_matched_bytes_search_is_used(twice, ckpts):
    res = twice[0]
    rows = {(r["method"], r["loss_rate"]): r for r in res["results"]}
    target = res["config"]["target_bytes"]
    assert rows["ours", 0.0]["bytes_per_frame"] == pytest.approx(target)
    seq = evaluation.load_sequence(["synthetic:5,3"], SIZE, 0, 8)
    table = ImageCodec(seq.frames, "jpeg")
    assert rows["jpeg", 0.0]["params"]["quality"] == table.matched_quality(target)
    best = rows["jpeg-best", 0.0]
    assert best["params"]["over_budget"] == (table.mean_bytes(1) > target)  # JPEG q1 at 64 px is ~700 B
    assert best["bytes_per_frame"] <= target or best["params"]["quality"] == 1
    for m in ("h264", "h264-fec20", "h264-fec50"):
        assert rows[m, 0.0]["params"]["target_bytes"] == pytest.approx(target)


def test_every_method_sees_the_same_draw(ckpts, monkeypatch):
    model, codec, _ = load_codec_model(ckpts["frame"])
    _, _, temporal = load_codec_model(ckpts["temporal"])
    seq = evaluation.load_sequence(["synthetic:5,3"], SIZE, 0, 6)
    seen: dict[str, list] = {}
    real_make, real_run = evaluation.make_baseline, evaluation.OurCodec.run

    def make(method, *a, **k):
        runner = real_make(method, *a, **k)

        def spy(draws):
            result = runner(draws)
            seen.setdefault(method, []).append((draws, result))
            return result
        return spy

    def our_run(self, draws, fill=DEFAULT_POLICY):
        shown = real_run(self, draws, fill)
        seen.setdefault(shown.method, []).append((draws, shown))
        return shown

    monkeypatch.setattr(evaluation, "make_baseline", make)
    monkeypatch.setattr(evaluation.OurCodec, "run", our_run)
    evaluation.evaluate_sequence(model, codec, temporal, seq, mode="random", rates=[0.0, 0.4],
                                 baselines=["jpeg", "jpeg-best", "h264-fec20"], seed=3, progress=False)
    assert set(seen) == {"ours", "ours+convlstm", "ours+copy", "jpeg", "jpeg-best", "h264-fec20"}
    for i, rate in enumerate([0.0, 0.4]):
        draws = seen["ours"][i][0]
        assert torch.equal(draws, evaluation.make_draws(RandomLoss(rate), 6, 3, 16))
        assert all(seen[m][i][0] is draws for m in seen)  # one draw object handed to every method
        for m in ("ours", "ours+convlstm", "ours+copy"):  # one channel per packet, channel 0 first: mask = slots 0..C-1
            assert torch.equal(seen[m][i][1].masks, draws[:, :16])
            assert list(seen[m][i][1].fresh) == [bool(row.any()) for row in draws[:, :16]]
        jpeg = seen["jpeg"][i][1]
        assert list(jpeg.fresh) == [bool(draws[f, :k].all()) for f, k in enumerate(jpeg.packets)]
    assert (seen["ours"][1][1].masks == 0).any()  # 40 % loss did bite


def test_tail_is_a_deadline_in_packet_slots():
    (_, rate, loss), = evaluation.loss_points("tail", [0.25], 16)
    d = evaluation.make_draws(loss, 3, 0, 16)
    assert d.shape == (3, evaluation.DRAW_SLOTS) and rate == 0.25
    assert torch.equal(d[:, :12], torch.ones(3, 12)) and not d[:, 12:].any()
    assert evaluation.make_draws(evaluation.loss_points("tail", [0.0], 16)[0][2], 3, 0, 16).all()


@pytest.mark.parametrize("loss", ["tail", "burst"])
def test_single_video_is_evaluated_whole(ckpts, tmp_path, loss):
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"f_{i}.png")
    out = evaluate.main(["--model_path", ckpts["frame"], "--data", f"frames:{folder}", "--size", str(SIZE),
                         "--rates", "0.25", "--loss", loss, "--baselines", "jpeg", "--rd-bits", "none",
                         "--out", str(tmp_path / "o")])
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["split"] == "all" and res["config"]["frames"] == 5
    assert {r["method"] for r in res["results"]} == {"ours", "ours+copy", "jpeg", "jpeg-best"}
    assert all(r["accuracy"] is None for r in res["results"])
    if loss == "tail":  # the last 4 of our 16 channels miss the deadline in every frame
        ours = next(r for r in res["results"] if r["method"] == "ours")
        assert ours["fresh_frames"] == 1.0 and res["config"]["our_packets"] == 16


@pytest.mark.parametrize("extra, message", [
    (["--rates", "0,1.5"], "rates"),
    (["--baselines", "mpeg2"], "unknown baseline"),
    (["--size", "60"], "multiples of 8"),
])
def test_bad_input_is_one_clear_error(ckpts, tmp_path, extra, message):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--model_path", ckpts["frame"], *DATA, "--out", str(tmp_path / "x"), *extra])
    assert str(e.value).startswith("error:") and message in str(e.value)


def test_classifier_needs_labels(ckpts, tmp_path):
    with pytest.raises(SystemExit, match="labelled"):
        evaluate.main(["--model_path", ckpts["frame"], "--data", "sample", "--size", "64", "--max-frames", "2",
                       "--classifier", ckpts["classifier"], "--out", str(tmp_path / "x")])


def test_split_picks_what_training_held_out():
    """--split held-out is val + test of the training run's split (same data, same seed): none of it is in
    train, and the default (auto) is the test split alone."""
    from data import load_videos, split_videos
    specs = ["synthetic:4,2"]
    parts = split_videos(load_videos(specs, size=32, seed=0), seed=0)
    held = {v.name for v in parts["val"] + parts["test"]}
    assert held and not held & {v.name for v in parts["train"]}
    assert set(evaluation.load_sequence(specs, 32, 0, None, "held-out").videos) == held
    assert evaluation.load_sequence(specs, 32, 0, None).videos == [v.name for v in parts["test"]]
    assert {c.videos[0] for c in evaluation.load_clips(specs, 32, 0, 1, "held-out")} == held
    with pytest.raises(ValueError, match="unknown split"):
        evaluation.pick_videos(specs, 32, 0, "train")
