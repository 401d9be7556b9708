"""Sender and receiver end to end on 127.0.0.1 (TCP and UDP), the seed's commands, robustness.

Tiny untrained models and 64x64 frames; the receiver runs in a thread (or a subprocess for the
CLI tests). No timing assertions: generous deadlines, and frames close by the reorder window or
the end-of-stream packet, so what arrives is deterministic.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import receiver_decode
import sender_encode
from codec import wire
from codec.packetize import decode_packets, encode_frame
from data import read_frames
from evaluation.runner import make_draws
from models import build_model, load_codec_model
from network.loss import LossEmulator, parse_loss
from network.transport import LENGTH, TcpReceiver
from utils.checkpoint import make_checkpoint, save_checkpoint
from utils.metrics import to_uint8

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64


def make_video(path: Path, frames: int = 60, size: int = SIZE) -> str:
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=30)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    yy, xx = np.mgrid[0:size, 0:size]
    for t in range(frames):
        img = np.stack([(xx * 4 + t * 3) % 256, (yy * 4 + t * 5) % 256, ((xx + yy) * 2 + t) % 256], -1)
        for packet in stream.encode(av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    return str(path)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    torch.manual_seed(0)
    ckpt = save_checkpoint(d / "lrae.pth", make_checkpoint(build_model("LRAE_VC")))
    return {"ckpt": str(ckpt), "video": make_video(d / "clip.mp4"), "dir": d}


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_bound(port: int, kind) -> None:
    """Until the receiver holds the port (our own bind then fails); no sleeping on a clock. Over TCP the
    probe binds with SO_REUSEADDR, as the receiver does: then the probe never keeps the receiver from
    binding (it did, rarely: the receiver exited and this loop waited its full course), and only a
    listening receiver makes the probe's bind fail. (A UDP receiver binds without it; the race remains.)"""
    for _ in range(100000):
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        threading.Event().wait(0.01)
    raise AssertionError("receiver never bound its port")


def run_pair(out: Path, assets, transport: str, rx_extra=(), tx_extra=(), ckpt=None, size=SIZE):
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    port = free_port(kind)
    ckpt = ckpt or assets["ckpt"]
    rx_args = ["--model-path", ckpt, "--host", "127.0.0.1", "--port", str(port), "--transport", transport,
               "--out-dir", str(out), "--once", "--deadline-ms", "60000", "--reorder-window", "4",
               "--reference", assets["video"], *rx_extra]
    result = {}
    th = threading.Thread(target=lambda: result.update(rx=receiver_decode.main(rx_args)), daemon=True)
    th.start()
    wait_bound(port, kind)
    tx = sender_encode.main(["--input", assets["video"], "--model-path", ckpt, "--host", "127.0.0.1",
                             "--port", str(port), "--transport", transport, "--size", str(size), "--fps", "100",
                             "--deadline-ms", "0", *tx_extra])
    th.join(120)
    assert not th.is_alive(), "receiver did not finish"
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    return tx, result["rx"], lines


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_stream_with_random_loss_matches_offline_decode(tmp_path, assets, transport):
    stats = tmp_path / "tx.jsonl"
    tx, summary, lines = run_pair(tmp_path / "rx", assets, transport,
                                  tx_extra=["--loss", "random:0.3", "--seed", "1", "--stats", str(stats)])
    assert tx["frames"] == 60 and summary["frames"] == 60
    assert [r["frame"] for r in lines] == list(range(60))  # every frame accounted for, once, in order
    assert all("bytes" in r and "psnr" in r for r in lines)
    draws = make_draws(parse_loss("random:0.3"), 60, 1, 16)  # evaluate.py --loss random:0.3 --seed 1
    sent = [json.loads(s)["sent"] for s in stats.read_text().splitlines()]
    assert sent == [[j for j in range(16) if draws[f, j] > 0.5] for f in range(60)]  # the same slots lost
    emu = LossEmulator("random:0.3", seed=1)
    model, codec, _ = load_codec_model(assets["ckpt"])
    refs = list(read_frames(assets["video"], size=SIZE))
    previous = None
    for r, x in zip(lines, refs):
        kept = [j for j, ok in enumerate(emu.pattern(r["frame"], 16)) if ok]
        got = r["received_packets"]
        if transport == "tcp":
            assert got == kept  # reliable transport: exactly what the loss emulator let through
        else:
            assert set(got) <= set(kept)
        png = torch.from_numpy(np.array(Image.open(tmp_path / "rx" / f"frame_{r['frame']:05d}.png")))
        if r["concealment"] == "repeat_last":
            expected = previous
        else:
            packets = encode_frame(model, x, r["frame"], codec)
            z, mask = decode_packets([packets[j] for j in got], codec, geometry=(16, SIZE // 8, SIZE // 8))
            assert int(mask.sum()) == r["channels_received"]
            x_hat = model.decode(z, mask)
            expected = to_uint8(x_hat)[0].permute(1, 2, 0)
        assert torch.equal(png, expected), f"frame {r['frame']} differs from the offline decode"
        previous = png
    assert summary["mean_psnr"] is not None and summary["latency_ms_p50"] is not None


def test_temporal_fill_matches_offline_step(tmp_path, assets):
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "temporal.pth", make_checkpoint(
        build_model("conv_lstm_ae", ae="LRAE_VC", hidden=8)))
    _, summary, lines = run_pair(tmp_path / "rx", assets, "tcp", ckpt=str(ckpt),
                                 tx_extra=["--loss", "random:0.5", "--seed", "2", "--max-frames", "12"])
    assert [r["frame"] for r in lines] == list(range(12)) and summary["concealment_of_lost_frames"] == "temporal"
    assert any(r["concealment"] == "temporal" for r in lines)
    model, codec, temporal = load_codec_model(str(ckpt))
    state = None
    for r, x in zip(lines, read_frames(assets["video"], size=SIZE)):
        packets = encode_frame(model, x, r["frame"], codec)
        z, mask = decode_packets([packets[j] for j in r["received_packets"]], codec, geometry=(16, 8, 8))
        z, state = temporal.step(z, mask, state)  # by hand, not through playback.conceal
        x_hat = model.decode(z, temporal.decoder_mask(state))
        png = torch.from_numpy(np.array(Image.open(tmp_path / "rx" / f"frame_{r['frame']:05d}.png")))
        assert torch.equal(png, to_uint8(x_hat)[0].permute(1, 2, 0)), f"frame {r['frame']}"


def test_frame_model_classifier_head(tmp_path, assets):
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "cls.pth", make_checkpoint(build_model("PNC_with_classification")))
    _, _, lines = run_pair(tmp_path / "rx", assets, "tcp", ckpt=str(ckpt), size=56, tx_extra=["--max-frames", "3"])
    assert len(lines) == 3 and all(0 <= r["pred"] < 8 and "psnr" in r for r in lines)
    clf = save_checkpoint(tmp_path / "clf.pth", make_checkpoint(build_model(
        "SimpleCNN", num_classes=3, width=4, input_size=32, classes=["a", "b", "c"])))
    _, _, lines = run_pair(tmp_path / "rx2", assets, "tcp", rx_extra=["--classifier", str(clf)],
                           tx_extra=["--max-frames", "2"])
    assert [r["pred_class"] in "abc" for r in lines] == [True, True]


def test_sender_started_before_receiver_retries(tmp_path, assets):
    port = free_port()
    result = {}
    tx = threading.Thread(target=lambda: result.update(tx=sender_encode.main(
        ["--input", assets["video"], "--model-path", assets["ckpt"], "--port", str(port), "--size", str(SIZE),
         "--max-frames", "4", "--fps", "0", "--deadline-ms", "0", "--connect-timeout", "60"])), daemon=True)
    tx.start()
    summary = receiver_decode.main(["--model-path", assets["ckpt"], "--port", str(port), "--out-dir",
                                    str(tmp_path / "rx"), "--once", "--deadline-ms", "60000", "--no-png"])
    tx.join(60)
    assert result["tx"]["frames"] == 4 and summary["frames_complete"] == 4


def test_key_mismatch_drops_everything_and_exits(tmp_path, assets):
    (tmp_path / "a.key").write_text("alpha\n")
    (tmp_path / "b.key").write_text("beta\n")
    tx, summary, lines = run_pair(tmp_path / "rx", assets, "tcp", rx_extra=["--key-file", str(tmp_path / "a.key")],
                                  tx_extra=["--key-file", str(tmp_path / "b.key"), "--max-frames", "5"])
    assert tx["frames"] == 5 and lines == []
    assert summary["dropped_packets"]["auth"] == 5 * 16 + 1  # every data packet and the end packet


def test_matching_key_and_udp_end(tmp_path, assets):
    (tmp_path / "k.key").write_bytes(b"shared-secret")
    key = ["--key-file", str(tmp_path / "k.key")]
    _, summary, lines = run_pair(tmp_path / "rx", assets, "udp", rx_extra=key, tx_extra=[*key, "--max-frames", "6"])
    assert [r["status"] for r in lines] == ["ok"] * 6 and summary["dropped_packets"] == {}


def test_port_in_use_and_no_receiver(assets):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SystemExit, match="cannot listen on 127.0.0.1"):
            receiver_decode.main(["--model-path", assets["ckpt"], "--port", str(port)])
    with pytest.raises(SystemExit, match="no receiver at 127.0.0.1"):
        sender_encode.main(["--model-path", assets["ckpt"], "--input", assets["video"], "--size", str(SIZE),
                            "--port", str(free_port()), "--connect-timeout", "0.3"])


def test_tcp_receiver_survives_bad_framing_and_killed_senders():
    rx = TcpReceiver("127.0.0.1", 0)
    try:
        addr = rx.address
        with socket.create_connection(addr) as c:  # a length prefix far beyond the limit
            c.sendall(LENGTH.pack(2**31))
            assert rx.poll(5).kind == "opened"
            ev = rx.poll(5)
            assert ev.kind == "closed" and "bad length prefix" in ev.info
        with socket.create_connection(addr) as c:  # killed mid-packet
            c.sendall(LENGTH.pack(100) + b"x" * 10)
            c.shutdown(socket.SHUT_WR)
            assert rx.poll(5).kind == "opened"
            ev = rx.poll(5)
            assert ev.kind == "closed" and "mid-packet" in ev.info
        with socket.create_connection(addr) as c:  # and a well-formed one still gets through
            c.sendall(LENGTH.pack(3) + b"abc")
            assert rx.poll(5).kind == "opened"
            ev = rx.poll(5)
            assert ev.kind == "packet" and ev.data == b"abc"
            with pytest.raises(wire.PacketError):
                wire.parse(ev.data)
    finally:
        rx.close()


def cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)


def wait_listening(proc) -> str:
    for line in proc.stdout:
        if line.startswith("Listening on"):
            return line.strip()
    raise AssertionError("receiver exited before listening")


def test_sigterm_and_a_background_sigint_end_the_receiver_with_its_summary(tmp_path, assets):
    ignore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731 (as `cmd &` in a script)
    for sig in (signal.SIGTERM, signal.SIGINT):
        out = tmp_path / sig.name
        rx = cli(str(ROOT / "receiver_decode.py"), "--model_path", assets["ckpt"], "--host", "127.0.0.1",
                 "--port", "0", "--out-dir", str(out), preexec_fn=ignore_sigint)
        wait_listening(rx)
        rx.send_signal(sig)
        assert rx.wait(60) == 0, (sig, rx.stdout.read())
        assert json.loads((out / "summary.json").read_text())["frames"] == 0


def test_cli_once_with_reference(tmp_path, assets):
    rx = cli(str(ROOT / "receiver_decode.py"), "--model_path", assets["ckpt"], "--host", "127.0.0.1", "--port", "0",
             "--out-dir", str(tmp_path / "out"), "--once", "--reference", assets["video"], "--deadline-ms", "60000")
    port = wait_listening(rx).rsplit(":", 1)[1]
    tx = cli(str(ROOT / "sender_encode.py"), "--input", assets["video"], "--model_path", assets["ckpt"],
             "--host", "127.0.0.1", "--port", port, "--loss", "random:0.3", "--seed", "1", "--size", str(SIZE),
             "--max-frames", "8", "--fps", "100")
    assert tx.wait(120) == 0, tx.stdout.read()
    assert rx.wait(120) == 0
    lines = [json.loads(s) for s in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and all("bytes" in r and "psnr" in r for r in lines)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["frames"] == 8


def test_seed_commands_verbatim(tmp_path):
    """The seed README's two commands, unchanged, in a folder holding its file names."""
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "PNC_final_w_random_drops.pth", make_checkpoint(build_model("PNC")))
    folder = tmp_path / "UCF_224x224x3_PNC_FrameCorr_input_imgs"
    folder.mkdir()
    g = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(g.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(folder / f"Diving-Side_001_{i}.jpg")
    port = free_port()
    rx = cli(str(ROOT / "receiver_decode.py"), '--model_path=PNC_final_w_random_drops.pth', "--host=127.0.0.1",
             f"--port={port}", cwd=tmp_path)
    try:
        assert wait_listening(rx) == f"Listening on 127.0.0.1:{port}"
        tx = cli(str(ROOT / "sender_encode.py"), "--input_dir=UCF_224x224x3_PNC_FrameCorr_input_imgs/",
                 "--model_path=PNC_final_w_random_drops.pth", "--host=127.0.0.1", f"--port={port}", cwd=tmp_path)
        assert tx.wait(120) == 0, tx.stdout.read()
        metrics = tmp_path / "receiver_output" / "metrics.jsonl"
        for line in rx.stdout:  # the receiver logs the end of the stream once every frame is written
            if "stream ended" in line:
                break
        assert len(metrics.read_text().splitlines()) == 3
    finally:
        rx.send_signal(signal.SIGINT)
        assert rx.wait(60) == 0
    assert json.loads((tmp_path / "receiver_output" / "summary.json").read_text())["frames"] == 3
