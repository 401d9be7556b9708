"""demo.py end to end on tiny untrained checkpoints, its guards, and the receiver's --compare-zero-fill mode.

Tiny models (LRAE_VC width 16, ConvLSTM hidden 8) and 64x64 frames; generous deadlines where the
test compares with an offline decode, so what arrives is deterministic. No timing assertions.
"""

import json
import socket
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import demo
import receiver_decode
import sender_encode
from codec.packetize import decode_packets, encode_frame
from data import read_frames
from models import build_model, load_codec_model
from models.rd_tables import add_tables, learned_codec
from tests.test_stream import SIZE, free_port, make_video, wait_bound
from utils.checkpoint import make_checkpoint, save_checkpoint
from utils.metrics import psnr, ssim, to_uint8

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A conv_lstm_ae checkpoint and the LRAE_VC checkpoint of its frame AE (same weights)."""
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    temporal = build_model("conv_lstm_ae", ae="LRAE_VC", ae_kwargs={"width": 16, "blocks": 1, "up_width": 8},
                           hidden=8)
    return {"model": str(save_checkpoint(d / "LRAE_VC.pth", make_checkpoint(temporal.ae))),
            "temporal": str(save_checkpoint(d / "conv_lstm_ae.pth", make_checkpoint(temporal))),
            "video": make_video(d / "clip.mp4", frames=12)}


def decoded_video(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_demo_writes_the_run_folder(tmp_path, ckpts, capsys):
    out = tmp_path / "demo"
    summary = demo.main(["--model-path", ckpts["model"], "--temporal", ckpts["temporal"], "--out-dir", str(out),
                         "--size", str(SIZE), "--max-frames", "10", "--eval-frames", "6"])
    printed = capsys.readouterr().out
    assert "zero fill" in printed and "ConvLSTM fill" in printed and "latency" in printed
    lines = [json.loads(s) for s in (out / "stream" / "metrics.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(10))
    assert all({"psnr", "ssim", "psnr_zero_fill", "ssim_zero_fill"} <= r.keys() for r in lines)
    frames = decoded_video(out / "stream" / "side_by_side.mp4")
    assert len(frames) == 10 and frames[0].shape == (SIZE, 3 * SIZE, 3)
    assert json.loads((out / "summary.json").read_text())["receiver"]["frames"] == 10
    assert summary["sender"]["frames"] == 10 and summary["receiver"]["mean_psnr_zero_fill"] is not None
    assert (out / "args.json").is_file() and (out / demo.MARKER).is_file()
    if (ROOT / "evaluate.py").is_file():
        assert summary["evaluate"]["plots"], "evaluate.py wrote no plot"
    else:
        assert summary["evaluate"] == {"skipped": "evaluate.py not found"}

    outside = tmp_path / "keep.txt"
    outside.write_text("not the demo's")
    demo.prepare_out_dir(out, [Path(ckpts["model"]), Path(ckpts["temporal"])])  # what the next run does first
    assert sorted(p.name for p in out.iterdir()) == [demo.MARKER]  # the folder is replaced...
    assert outside.read_text() == "not the demo's"  # ...and nothing else is touched


def test_demo_with_quality_levels_streams_under_rate_control_with_copy_fill(tmp_path, capsys):
    """The default demo's kind of model (LRAE_RD: learned tables, quality levels) without a ConvLSTM: the
    receiver's main fill is copy, zero fill beside it, the sender holds --kbps."""
    torch.manual_seed(0)
    model = build_model("LRAE_RD", latent_channels=8, width=16, blocks=1, up_width=8, levels=3)
    path = save_checkpoint(tmp_path / "LRAE_RD.pth", make_checkpoint(model))
    add_tables(str(path))
    out = tmp_path / "demo"
    summary = demo.main(["--model-path", str(path), "--out-dir", str(out), "--size", str(SIZE), "--max-frames", "8",
                         "--eval-frames", "0", "--kbps", "20"])
    assert "copy fill" in capsys.readouterr().out and summary["policy"] == "copy"
    lines = [json.loads(s) for s in (out / "stream" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and all("psnr_zero_fill" in r and 0 <= r["quality"] < 3 for r in lines)
    assert summary["receiver"]["policy"] == "copy" and summary["sender"]["frames"] == 8
    assert len(decoded_video(out / "stream" / "side_by_side.mp4")) == 8


def test_demo_streams_an_inter_codec_with_feedback(tmp_path, capsys):
    """The default demo's kind of model (LRAE_RD_P: I- and P-frames, the receiver's feedback): no fill to
    compare, side_by_side.mp4 is original | I/P stream, the report counts P-frames and feedback."""
    torch.manual_seed(0)
    model = build_model("LRAE_RD_P", intra_kwargs={"latent_channels": 8, "width": 16, "blocks": 1, "up_width": 8,
                                                   "levels": 3})
    path = save_checkpoint(tmp_path / "LRAE_RD_P.pth", make_checkpoint(model, extra={
        "codec": learned_codec(model.intra), "p_codec": learned_codec(model)}))
    out = tmp_path / "demo"
    summary = demo.main(["--model-path", str(path), "--out-dir", str(out), "--size", str(SIZE), "--max-frames", "8",
                         "--eval-frames", "0"])
    printed = capsys.readouterr().out
    assert "I/P stream with feedback" in printed and "zero fill" not in printed
    assert summary["policy"] == "inter" and summary["receiver"]["policy"] == "inter"
    assert summary["sender"]["p_frames"] >= 1 and summary["receiver"]["feedback_sent"] == 8
    lines = [json.loads(s) for s in (out / "stream" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["frame_type"] == "I" and "P" in {r["frame_type"] for r in lines}
    video = decoded_video(out / "stream" / "side_by_side.mp4")
    assert len(video) == 8 and video[0].shape == (SIZE, 2 * SIZE, 3)
    with pytest.raises(SystemExit, match="--temporal does not apply"):
        demo.main(["--model-path", str(path), "--temporal", str(path), "--out-dir", str(tmp_path / "d2")])


def test_demo_missing_checkpoint_is_one_clear_line(tmp_path, monkeypatch, ckpts):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"^error: missing checkpoint checkpoints/LRAE_RD_P.pth \(--model-path\)"):
        demo.main([])
    with pytest.raises(SystemExit, match=r"missing checkpoint nowhere/conv_lstm_ae.pth \(--temporal\)"):
        demo.main(["--model-path", ckpts["model"], "--temporal", "nowhere/conv_lstm_ae.pth"])
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_demo_never_replaces_a_folder_it_did_not_make(tmp_path, ckpts):
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep me")
    args = ["--model-path", ckpts["model"], "--temporal", ckpts["temporal"]]
    with pytest.raises(SystemExit, match="refusing to replace .*demo.py did not make it"):
        demo.main([*args, "--out-dir", str(mine)])
    assert (mine / "precious.txt").read_text() == "keep me"
    ckpt_dir = Path(ckpts["model"]).parent
    (ckpt_dir / demo.MARKER).write_text("")  # even a marked folder is kept if a checkpoint lives in it
    try:
        with pytest.raises(SystemExit, match="is inside --out-dir"):
            demo.main([*args, "--out-dir", str(ckpt_dir)])
    finally:
        (ckpt_dir / demo.MARKER).unlink()
    assert Path(ckpts["model"]).is_file() and Path(ckpts["temporal"]).is_file()


def test_demo_reports_a_failing_receiver(tmp_path, ckpts):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match=r"error: the receiver failed \(exit code 1\): error: cannot read checkpoint"):
        demo.main(["--model-path", str(bad), "--temporal", ckpts["temporal"], "--out-dir", str(tmp_path / "d"),
                   "--size", str(SIZE), "--eval-frames", "0"])


def test_receiver_compare_zero_fill(tmp_path, ckpts):
    """Both variants from the same packets: ConvLSTM = main (PNGs, psnr), zero fill = psnr_zero_fill, and
    side_by_side.mp4 with one 3-panel frame per frame."""
    port, out = free_port(), tmp_path / "rx"
    rx_args = ["--model-path", ckpts["model"], "--temporal", ckpts["temporal"], "--compare-zero-fill",
               "--port", str(port), "--out-dir", str(out), "--once", "--deadline-ms", "60000",
               "--reorder-window", "4", "--reference", ckpts["video"]]
    result = {}
    th = threading.Thread(target=lambda: result.update(rx=receiver_decode.main(rx_args)), daemon=True)
    th.start()
    wait_bound(port, socket.SOCK_STREAM)
    sender_encode.main(["--input", ckpts["video"], "--model-path", ckpts["model"], "--port", str(port),
                        "--size", str(SIZE), "--fps", "100", "--deadline-ms", "0", "--loss", "random:0.4",
                        "--seed", "3", "--max-frames", "8"])
    th.join(120)
    assert not th.is_alive(), "receiver did not finish"
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(8))
    assert any(r["concealment"] == "temporal" and r["concealment_zero_fill"] == "zero_fill" for r in lines)
    summary = result["rx"]
    assert summary["mean_psnr_zero_fill"] is not None and summary["mean_psnr"] is not None

    model, codec, temporal = load_codec_model(ckpts["temporal"])
    refs = list(read_frames(ckpts["video"], size=SIZE))
    state, differs, last_zero = None, False, None
    video = decoded_video(out / "side_by_side.mp4")
    assert len(video) == 8 and video[0].shape == (SIZE, 3 * SIZE, 3)
    for r, x in zip(lines, refs):
        packets = encode_frame(model, x, r["frame"], codec)
        z, mask = decode_packets([packets[j] for j in r["received_packets"]], codec, geometry=(16, 8, 8))
        z_fill, state = temporal.step(z, mask, state)  # by hand, not through playback.conceal
        x_fill = model.decode(z_fill, temporal.decoder_mask(state))
        x_zero = last_zero if not mask.any() and last_zero is not None else model.decode(z, mask)
        last_zero = x_zero
        png = torch.from_numpy(np.array(Image.open(out / f"frame_{r['frame']:05d}.png")))
        assert torch.equal(png, to_uint8(x_fill)[0].permute(1, 2, 0)), f"frame {r['frame']}: main is the fill"
        assert r["psnr_zero_fill"] == round(float(psnr(x_zero, x)[0]), 4)
        assert r["ssim_zero_fill"] == round(float(ssim(x_zero, x)[0]), 5)
        differs |= r["psnr"] != r["psnr_zero_fill"]
        panels = np.split(video[r["frame"]].astype(float), 3, axis=1)  # lossy mp4: close, not equal
        for panel, want in zip(panels, (x[None], x_zero, x_fill)):
            assert np.abs(panel[16:] - to_uint8(want)[0].permute(1, 2, 0).numpy()[16:]).mean() < 12  # below labels
    assert differs, "zero fill and ConvLSTM fill gave the same frames"


def test_compare_zero_fill_needs_another_policy(ckpts):
    with pytest.raises(SystemExit, match="--compare-zero-fill needs another policy than zero fill"):
        receiver_decode.main(["--model-path", ckpts["model"], "--compare-zero-fill", "--port", str(free_port())])
    with pytest.raises(SystemExit, match="bad concealment policy 'smear'"):
        receiver_decode.main(["--model-path", ckpts["model"], "--policy", "smear", "--port", str(free_port())])
    with pytest.raises(SystemExit, match="needs a temporal model"):
        receiver_decode.main(["--model-path", ckpts["model"], "--policy", "convlstm", "--port", str(free_port())])
