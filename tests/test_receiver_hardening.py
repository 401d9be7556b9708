"""The receiver under attack on 127.0.0.1: forged packets, amplification, slow and stopped TCP clients,
replays, a second run into one folder, absurd checkpoints and flags. Each test failed before the fix.

The shipped LRAE_VC checkpoint (calibrated, 4 bits, 224x224 frames) is used where a packet must fail
inside the frame assembly; generous timeouts only, no timing assertions.
"""

import dataclasses
import json
import logging
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

import receiver_decode
import sender_encode
from benchmarks.soak_receiver import slow_drip
from codec import wire
from codec.packetize import encode_frame
from models import build_model, load_codec_model
from network.reassembly import Reassembler
from network.transport import LENGTH, open_receiver
from playback.output import DropLog
from tests.test_stream import ROOT, cli, free_port, wait_listening
from utils.checkpoint import make_checkpoint, save_checkpoint

SHIPPED = str(ROOT / "checkpoints" / "LRAE_VC.pth")
UDP, TCP = socket.SOCK_DGRAM, socket.SOCK_STREAM


@pytest.fixture(scope="module")
def shipped():
    model, codec, _ = load_codec_model(SHIPPED)
    return model, codec


def packets(shipped, frame: int, stream_id: int, key=None, age_s: float = 0.0) -> list[bytes]:
    model, codec = shipped
    torch.manual_seed(frame)
    return encode_frame(model, torch.rand(3, 224, 224), frame, codec, stream_id=stream_id, key=key,
                        capture_us=int((time.time() - age_s) * 1e6))


def forged(shipped, stream_id: int = 0x1234) -> bytes:
    """Header-valid, right fingerprint, but 5 bits on the 4-bit calibration: fails in FrameAssembly.add."""
    p = wire.parse(packets(shipped, 0, stream_id)[0])
    return wire.pack(dataclasses.replace(p.header, bits=5), [dataclasses.replace(p.entries[0], data=b"\x01")])


def end(shipped, stream_id: int, frames: int, key=None) -> bytes:
    model, codec = shipped
    return wire.end_packet(stream_id, frames, int(time.time() * 1e6), codec.fingerprint, (16, 28, 28), 4,
                           codec.mode, key)


def receiver(out: Path | None, port: int, transport: str = "udp", *extra) -> tuple[threading.Thread, dict]:
    """receiver_decode.main in a thread (--once); returns once it holds the port (or has exited)."""
    args = ["--model-path", SHIPPED, "--port", str(port), "--transport", transport, "--once",
            "--deadline-ms", "60000", "--idle-timeout", "1", *(["--out-dir", str(out)] if out else []), *extra]
    result = {}

    def run():
        try:
            result["rx"] = receiver_decode.main(args)
        except SystemExit as e:
            result["exit"] = str(e)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    while th.is_alive():  # until the receiver holds the port (our own bind fails) or has exited
        with socket.socket(socket.AF_INET, UDP if transport == "udp" else TCP) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                break
        time.sleep(0.01)
    return th, result


def send_udp(port: int, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, UDP) as s:
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", port))


def sender(port: int, transport: str = "tcp", *extra) -> dict:
    return sender_encode.main(["--model-path", SHIPPED, "--input", "sample", "--port", str(port), "--transport",
                               transport, "--max-frames", "3", "--fps", "0", "--deadline-ms", "0",
                               "--connect-timeout", "20", *extra])


def test_forged_packet_over_udp_neither_crashes_nor_blocks_the_real_stream(tmp_path, shipped):
    port = free_port(UDP)
    th, result = receiver(tmp_path / "rx", port)
    send_udp(port, [forged(shipped)])
    tx = sender(port, "udp")
    th.join(120)
    assert not th.is_alive() and "rx" in result, result
    assert tx["frames"] == 3 and result["rx"]["frames_decoded"] == 3
    assert result["rx"]["dropped_packets"]["model"] == 1


def test_forged_packet_over_tcp_does_not_end_the_receiver(tmp_path, shipped):
    rx = cli(str(ROOT / "receiver_decode.py"), "--model-path", SHIPPED, "--port", "0", "--out-dir",
             str(tmp_path / "rx"), "--deadline-ms", "60000")
    try:
        port = int(wait_listening(rx).rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as c:
            data = forged(shipped)
            c.sendall(LENGTH.pack(len(data)) + data)
        tx = sender(port)
        assert tx["frames"] == 3 and tx["end_confirmed"] is True
        for line in rx.stdout:
            if "stream ended after 3 frames" in line:
                break
    finally:
        rx.send_signal(signal.SIGINT)
        assert rx.wait(60) == 0


def test_three_forged_datagrams_do_not_write_thousands_of_frames(tmp_path, shipped):
    port, sid = free_port(UDP), 0xBAD
    th, result = receiver(tmp_path / "rx", port)
    send_udp(port, [packets(shipped, 0, sid)[0], packets(shipped, 2999, sid)[0], end(shipped, sid, 2**32 - 1)])
    th.join(120)
    assert not th.is_alive() and "rx" in result, result
    assert result["rx"]["frames"] <= 40
    assert len(list((tmp_path / "rx").glob("frame_*.png"))) <= 40


def test_gaps_are_bounded_and_takeover_beats_a_guessed_stream_id(shipped):
    model, codec = shipped
    clock = [time.time()]
    r = Reassembler(codec, deadline_ms=1e6, window=4, clock=lambda: clock[0])
    for p in packets(shipped, 0, 0xF0F0)[:12]:  # a dozen forged packets under a guessed id
        r.push(wire.parse(p), clock[0])
    out, real = [], [wire.parse(p) for p in packets(shipped, 0, 0xAAAA)]
    for i in range(120):  # the real stream, 30 frames a second for 4 s (one frame's packets, renumbered)
        clock[0] += 1 / 30
        for p in real:
            try:
                out += r.push(dataclasses.replace(p, header=dataclasses.replace(p.header, frame_index=i)), clock[0])
            except wire.PacketError as e:
                assert e.reason == "foreign"
        out += r.tick(clock[0])
    assert r.stream is not None and r.stream.stream_id == 0xAAAA
    assert len([f for f in out if f.stream_id == 0xAAAA]) >= 20


def test_replay_after_64_other_streams_is_refused(shipped):
    model, codec = shipped
    r = Reassembler(codec, deadline_ms=1e6, window=4)
    first = packets(shipped, 0, 1)
    for sid in range(1, 67):
        r.push(wire.parse(first[0] if sid == 1 else packets(shipped, 0, sid)[0]))
        r.end_stream()
    with pytest.raises(wire.PacketError, match="seen before"):
        r.push(wire.parse(first[1]))


def test_keyed_packets_captured_long_ago_are_stale(tmp_path, shipped):
    key_file = tmp_path / "k.key"
    key_file.write_bytes(b"secret")
    key, port = wire.read_key(str(key_file)), free_port(UDP)
    th, result = receiver(tmp_path / "rx", port, "udp", "--key-file", str(key_file))
    send_udp(port, packets(shipped, 0, 0x01D, key=key, age_s=60))
    th.join(120)
    assert result["rx"]["frames"] == 0 and result["rx"]["dropped_packets"]["stale"] == 16


def test_keyed_stream_replayed_after_a_restart_is_refused(tmp_path, shipped):
    key_file = tmp_path / "k.key"
    key_file.write_bytes(b"secret")
    key, sid = wire.read_key(str(key_file)), 0x5EED
    stream = [p for i in range(2) for p in packets(shipped, i, sid, key=key)] + [end(shipped, sid, 2, key)]
    port = free_port(UDP)
    th, result = receiver(tmp_path / "rx", port, "udp", "--key-file", str(key_file))
    send_udp(port, stream)
    th.join(120)
    assert result["rx"]["frames_complete"] == 2
    port = free_port(UDP)  # restart into the same folder: the replay cache there remembers the stream
    th, result = receiver(tmp_path / "rx", port, "udp", "--key-file", str(key_file), "--overwrite")
    send_udp(port, stream)
    th.join(120)
    assert result["rx"]["frames"] == 0 and result["rx"]["dropped_packets"]["replay"] >= 32


def test_slow_drip_and_stopped_senders_are_timed_out_and_a_queued_sender_is_served(tmp_path, shipped):
    rx = cli(str(ROOT / "receiver_decode.py"), "--model-path", SHIPPED, "--port", "0", "--out-dir",
             str(tmp_path / "rx"), "--deadline-ms", "60000", "--idle-timeout", "2")
    stop = threading.Event()
    try:
        port = int(wait_listening(rx).rsplit(":", 1)[1])

        def stopped():  # two frames, then silence without closing (a SIGSTOPped sender)
            with socket.create_connection(("127.0.0.1", port)) as c:
                for p in packets(shipped, 0, 0x5709) + packets(shipped, 1, 0x5709):
                    c.sendall(LENGTH.pack(len(p)) + p)
                stop.wait(120)

        drip = lambda: slow_drip(port, stop)  # noqa: E731 - one byte every 1.5 s inside a packet
        clients = [threading.Thread(target=f, daemon=True) for f in (drip, stopped)]
        for t in clients:
            t.start()
            time.sleep(0.3)
        tx = sender(port, "tcp", "--stream-id", "77")
        assert tx["frames"] == 3 and tx["end_confirmed"] is True
    finally:
        stop.set()
        rx.send_signal(signal.SIGINT)
        assert rx.wait(60) == 0
    summary = json.loads((tmp_path / "rx" / "summary.json").read_text())
    lines = [json.loads(s) for s in (tmp_path / "rx" / "metrics.jsonl").read_text().splitlines()]
    mine = [r for r in lines if r["stream"] == f"{77:08x}"]
    assert [r["status"] for r in mine] == ["ok"] * 3 and all(r["latency_ms"] > 0 for r in mine)
    assert summary["streams"] >= 2


def test_a_second_run_never_destroys_the_first(tmp_path, shipped, monkeypatch):
    def one_run(out_args, sid):
        port = free_port(UDP)
        th, result = receiver(None, port, "udp", *out_args)
        send_udp(port, packets(shipped, 0, sid) + [end(shipped, sid, 1)])
        th.join(120)
        return result

    monkeypatch.setattr(receiver_decode, "DEFAULT_OUT", str(tmp_path / "receiver_output"))
    first = one_run(["--out-dir", str(tmp_path / "mine")], 1)
    assert first["rx"]["frames"] == 1
    before = (tmp_path / "mine" / "metrics.jsonl").read_text()
    again = one_run(["--out-dir", str(tmp_path / "mine")], 2)
    assert "not empty" in again["exit"] and (tmp_path / "mine" / "metrics.jsonl").read_text() == before
    assert one_run(["--out-dir", str(tmp_path / "mine"), "--overwrite"], 3)["rx"]["frames"] == 1
    for sid in (4, 5):  # the default folder: the next run goes to run-002
        assert one_run([], sid)["rx"]["frames"] == 1
    assert (tmp_path / "receiver_output" / "metrics.jsonl").exists()
    assert len((tmp_path / "receiver_output" / "run-002" / "metrics.jsonl").read_text().splitlines()) == 1


def test_huge_model_kwargs_are_one_line_errors(tmp_path):
    ckpt = make_checkpoint(build_model("LRAE_VC"))
    ckpt["model_kwargs"]["width"] = 60000
    path = save_checkpoint(tmp_path / "huge.pth", ckpt)
    with pytest.raises(SystemExit, match="parameters"):
        receiver_decode.main(["--model-path", str(path), "--port", str(free_port())])
    with pytest.raises(SystemExit, match="parameters"):
        sender_encode.main(["--model-path", str(path), "--port", str(free_port())])


@pytest.mark.parametrize("script,argv", [
    (receiver_decode, ["--port", "70000"]), (receiver_decode, ["--deadline-ms", "-1"]),
    (receiver_decode, ["--idle-timeout", "-1"]), (sender_encode, ["--stream-id", "-1"]),
    (sender_encode, ["--stream-id", str(2**33)]), (sender_encode, ["--size", "0"]),
    (sender_encode, ["--max-frames", "-1"])])
def test_bad_numeric_flags_are_usage_errors(script, argv, capsys):
    with pytest.raises(SystemExit) as e:
        script.parse_args(["--model-path", "x.pth", *argv])
    assert e.value.code == 2 and "error: argument" in capsys.readouterr().err


def test_whole_stream_in_one_burst_is_reported_as_a_stream(tmp_path, shipped, caplog, monkeypatch):
    def open_late(*args, **kwargs):  # the first poll starts after the whole stream is queued
        rx = open_receiver(*args, **kwargs)
        poll, first = rx.poll, [True]
        rx.poll = lambda timeout: (first and (first.clear() or time.sleep(1.0))) or poll(timeout)
        return rx

    monkeypatch.setattr(receiver_decode, "open_receiver", open_late)
    caplog.set_level(logging.INFO)
    port, sid = free_port(UDP), 0xB0B
    th, result = receiver(tmp_path / "rx", port)
    send_udp(port, [p for i in range(3) for p in packets(shipped, i, sid)] + [end(shipped, sid, 3)])
    th.join(120)
    assert result["rx"]["frames"] == 3
    assert "stream ended after 3 frames" in caplog.text and "without a valid stream" not in caplog.text


def test_drop_kinds_are_logged_again_for_a_later_sender(caplog):
    drops = DropLog(logging.getLogger("t"))
    for _ in range(2):
        drops.note(wire.PacketError("auth", "HMAC mismatch"))
        drops.reset()
    assert caplog.text.count("HMAC mismatch") == 2 and drops.counts["auth"] == 2
