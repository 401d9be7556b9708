"""evaluate.py --bitrates: RD curves under loss, freeze times, BD-rate rows, the per-budget tables and plot.

A tiny untrained LRAE_VC, 64x64 synthetic frames, 6 frames, two loss rates, two budgets.
"""

import json
from dataclasses import replace

import pytest
import torch

import evaluate
from evaluation import methods, rd
from evaluation import runner as evaluation
from models import build_model, load_codec_model
from utils.checkpoint import make_checkpoint, save_checkpoint

ROW_KEYS = {"method", "loss_model", "loss_rate", "burst_len", "bytes_per_frame", "psnr", "ms_ssim", "ssim_db",
            "fresh_frames", "freeze_ms_total", "freeze_ms_p95", "budget"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("LRAE_VC", width=16, up_width=8, blocks=1)
    return str(save_checkpoint(tmp_path_factory.mktemp("rd") / "lrae.pth", make_checkpoint(model)))


def test_parse_bitrates():
    assert rd.parse_bitrates("4000,1000,2000") == [1000.0, 2000.0, 4000.0]
    assert rd.parse_bitrates("kbps:240,480", fps=30) == [1000.0, 2000.0]  # 240 kbit/s / 8 / 30 fps
    assert rd.parse_bitrates("500,kbps:240", fps=24) == [500.0, 1250.0]
    assert rd.parse_bitrates("none") == []
    for bad in ("0", "a,b", "kbps:-3"):
        with pytest.raises(ValueError, match="bitrates"):
            rd.parse_bitrates(bad)


def test_bitrates_sweep_every_method_under_every_loss(ckpt, tmp_path):
    out = evaluate.main(["--model_path", ckpt, "--data", "synthetic:5,3", "--size", "64", "--max-frames", "6",
                         "--rates", "0,0.4", "--baselines", "jpeg,h264", "--rd-bits", "3,5",
                         "--bitrates", "kbps:240,480", "--fps", "30", "--out", str(tmp_path / "o")])
    res = json.loads((out / "results.json").read_text())
    rows = res["rd_under_loss"]
    assert res["config"]["bitrates"] == [1000.0, 2000.0] and res["config"]["fps"] == 30
    # per loss rate: ours (zero and copy fill) at 2 rate points, 3 baselines at 2 budgets
    assert len(rows) == 2 * (2 * 2 + 3 * 2)
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert (r["budget"] is None) == (r["method"] in ("ours", "ours+copy"))
        assert r["freeze_ms_total"] >= r["freeze_ms_p95"] >= 0
        if r["loss_rate"] == 0:
            assert r["fresh_frames"] == 1.0 and r["freeze_ms_total"] == 0.0
        if r["fresh_frames"] == 0:  # 6 frames at 30 fps, all frozen: one 200 ms freeze
            assert r["freeze_ms_total"] == pytest.approx(200.0) and r["freeze_ms_p95"] == pytest.approx(200.0)
    assert sorted({r["params"]["bits"] for r in rows if r["method"] == "ours"}) == [3, 5]
    h264 = [r for r in rows if r["method"] == "h264" and r["loss_rate"] == 0]
    assert [round(r["bytes_per_frame"] / r["budget"], 1) for r in h264] == [1.0, 1.0]
    assert {(b["anchor"], b["loss_rate"]) for b in res["bd_rate"]} == {  # for each of ours' fills
        (a, rate) for a in ("jpeg", "jpeg-best", "h264") for rate in (0.0, 0.4)}
    assert {b["method"] for b in res["bd_rate"]} == {"ours", "ours+copy"}
    assert all(r["freeze_ms_p95"] is not None for r in res["results"])
    md = (out / "results.md").read_text()
    assert "## BD-rate under loss" in md and "## Matched to 1000 B/frame" in md and "## Matched to 2000" in md
    table = md.split("2000 B/frame:")[1].split("\n\n")[1].splitlines()  # operating points: methods x conditions
    assert table[0] == "| method, B/frame | random (0 %) | random (40 %) |"
    assert {line.split(",")[0] for line in table[2:]} == {"| ours", "| ours+copy", "| jpeg", "| jpeg-best", "| h264"}
    assert (out / "rd_under_loss.png").stat().st_size > 0


def test_ours_rate_points_come_from_the_registry_hook(ckpt, monkeypatch):
    model, codec, _ = load_codec_model(ckpt)
    seq = evaluation.load_sequence(["synthetic:5,3"], 64, 0, 4)
    calls = []

    def points(model, ckpt, spec):
        calls.append(list(spec))
        return [({"bits": 4}, codec)]

    monkeypatch.setattr(methods, "OURS", replace(methods.OURS, rate_points=points))
    rows = rd.rd_under_loss(model, None, None, seq.frames,
                            losses=evaluation.loss_points("random", [0.2], 16), budgets=[900.0],
                            baselines=["webp"], rate_spec=[7, 8], seed=1, our_packets=16, progress=False)
    assert calls == [[7, 8]]
    assert [(r["method"], r["budget"]) for r in rows] == [("ours", None), ("ours+copy", None), ("webp", 900.0)]
    assert rd.bd_rates(rows, ["webp"])[0]["bd_rate"] is None  # one point per curve


def write_clip(folder, seed: int, frames: int = 4, size: int = 64) -> None:
    """A frame folder <video>/<frame>.png of a moving random texture."""
    from PIL import Image

    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    base = (torch.rand(size, size + frames, 3, generator=g) * 255).to(torch.uint8).numpy()
    for t in range(frames):
        Image.fromarray(base[:, t:t + size]).save(folder / f"{t:03d}.png")


def test_per_clip_rows_and_their_mean(ckpt, tmp_path):
    """--per-clip on a folder of two clips: each clip evaluated alone, results = the mean over clips."""
    data = tmp_path / "clips"
    write_clip(data / "a", 1)
    write_clip(data / "b", 2, frames=6)
    out = evaluate.main(["--model_path", ckpt, "--data", str(data), "--per-clip", "--size", "64",
                         "--max-frames", "0", "--rates", "0,0.3", "--baselines", "jpeg", "--rd-bits", "none",
                         "--out", str(tmp_path / "o")])
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["per_clip"] and res["config"]["videos"] == ["a", "b"] and res["config"]["frames"] == 10
    clips = {c["clip"]: c for c in res["per_clip"]}
    assert set(clips) == {"a", "b"} and clips["a"]["frames"] == 4 and clips["b"]["frames"] == 6
    for mean in res["results"]:
        same = [next(r for r in clips[c]["results"] if r["method"] == mean["method"]
                     and r["loss_rate"] == mean["loss_rate"]) for c in ("a", "b")]
        assert mean["clips"] == 2
        for k in ("psnr", "bytes_per_frame", "fresh_frames"):
            assert mean[k] == pytest.approx((same[0][k] + same[1][k]) / 2)  # each clip weighs the same
    assert {(r["method"], r["loss_rate"]) for r in res["results"]} == {
        (m, rate) for m in ("ours", "ours+copy", "jpeg", "jpeg-best") for rate in (0.0, 0.3)}
