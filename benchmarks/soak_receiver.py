"""Soak the receiver: a long real stream with packet loss while attackers hammer it (not a test: minutes).

    python -m benchmarks.soak_receiver --frames 3000              # ~2 min of stream at 30 fps, then a TCP phase
    python -m benchmarks.soak_receiver --frames 300 --tcp-frames 60 --out runs/soak-quick

Phase 1 (UDP): receiver_decode.py (shipped LRAE_VC, PNGs on, ``--deadline-ms`` 100) and sender_encode.py
(the sample clip looped at ``--fps`` 30, ``--loss random:0.3 --deadline-ms 0``) as subprocesses; the sender talks to a
relay in this process that forwards every datagram and, once the real stream runs, also sends:
header-valid garbage (benchmarks/fuzz_packets.py mutations, resealed, under random stream ids),
packets that fail inside the frame assembly (5 bits on the 4-bit calibration), the 3-datagram
amplification pattern (frames 0 and 2999, end at 2^32-1) and replays of the real stream's own packets
from 1-3 s earlier. The attackers do not know the stream id (without --key-file nothing protects a
stream whose id is known; README, threat model).
Phase 2 (TCP): a slow-drip connection, a stopped sender (one frame, then silence) and two idle
connections reach the receiver first; the real sender queues behind them and must still be served.

Reports per phase: frames of the real stream decoded (of those sent), p95 latency, receiver RSS at
"Listening", after the first 100 frames, at the end and its maximum (sampled), files written, drops by
reason, exit status.
Exits 1 if the receiver crashed, a real frame was not decoded, RSS grew by 20 MB or more after the
first 100 frames, or more frames were written than the real streams sent.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from benchmarks.fuzz_packets import mutate, reseal
from codec import wire
from codec.packetize import encode_frame
from models import load_codec_model
from network.transport import LENGTH
from utils.argtypes import int_in, positive

ROOT = Path(__file__).resolve().parents[1]
CKPT = str(ROOT / "checkpoints" / "LRAE_VC.pth")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--frames", type=int_in(100), default=3000, help="frames of the real UDP stream")
    p.add_argument("--tcp-frames", type=int_in(0), default=300, help="frames of the real TCP stream (0: skip)")
    p.add_argument("--fps", type=positive(), default=30.0, help="frame rate of the real streams")
    p.add_argument("--deadline-ms", type=positive(), default=100.0,
                   help="the receiver's frame deadline (the sender sends every packet, --deadline-ms 0); on a "
                        "shared, loaded machine a longer one keeps CPU stalls from losing frames")
    p.add_argument("--attack-rate", type=int_in(1, 5000), default=300, help="attack datagrams per second")
    p.add_argument("--out", default="runs/soak",
                   help="folder for the receivers' output (an earlier soak's is replaced; the real streams get "
                        "random ids, as the receivers' replay caches there remember earlier ones)")
    p.add_argument("--seed", type=int_in(0), default=0, help="seed of the attacks")
    return p.parse_args(argv)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(script: str, *args: str) -> subprocess.Popen:
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.Popen([sys.executable, str(ROOT / script), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


class Receiver:
    """receiver_decode.py as a subprocess; its log is read in a thread (stream ends, RSS checkpoints)."""

    def __init__(self, out: Path, transport: str, sid: int, deadline_ms: float):
        self.sid = sid
        self.proc = start("receiver_decode.py", "--model-path", CKPT, "--port", "0", "--transport", transport,
                          "--out-dir", str(out), "--overwrite", "--deadline-ms", str(deadline_ms))
        self.out, self.log, self.ended = out, [], threading.Event()
        for line in self.proc.stdout:
            self.log.append(line)
            if line.startswith("Listening on"):
                self.port = int(line.rsplit(":", 1)[1])
                break
        else:
            raise SystemExit("error: the receiver did not start:\n" + "".join(self.log))
        self.rss = {"listening": rss_mb(self.proc.pid)}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.log.append(line)
            if "stream ended" in line and any(f"{self.sid:08x} started" in x for x in self.log):
                self.ended.set()

    def written(self) -> int:
        try:
            with open(self.out / "metrics.jsonl") as f:
                return sum(1 for _ in f)
        except OSError:
            return 0

    def watch_rss(self, after: int) -> None:
        """Record RSS once ``after`` frames were written (``after_N_frames``), then its maximum every 2 s."""
        def run():
            while self.written() < after and self.proc.poll() is None:
                time.sleep(0.2)
            self.rss[f"after_{after}_frames"] = self.rss["max"] = rss_mb(self.proc.pid)
            while self.proc.poll() is None:
                self.rss["max"] = max(self.rss["max"], rss_mb(self.proc.pid))
                time.sleep(2)

        threading.Thread(target=run, daemon=True).start()

    def finish(self) -> dict:
        self.rss["end"] = rss_mb(self.proc.pid)
        self.rss = dict(self.rss)  # the watcher stops with the process
        self.proc.send_signal(2)
        code = self.proc.wait(120)
        summary = json.loads((self.out / "summary.json").read_text()) if code == 0 else {}
        lines = [json.loads(s) for s in (self.out / "metrics.jsonl").read_text().splitlines()]
        real = [r for r in lines if r["stream"] == f"{self.sid:08x}"]
        lat = sorted(r["latency_ms"] for r in real if r["latency_ms"] is not None)
        return {"exit": code, "real_frames": len(real), "real_decoded": sum(r["status"] != "lost" for r in real),
                "frames_written": len(lines), "files": sum(1 for p in self.out.rglob("*") if p.is_file()),
                "p95_latency_ms": round(lat[int(0.95 * (len(lat) - 1))], 1) if lat else None,
                "rss_mb": {k: round(v, 1) for k, v in self.rss.items()},
                "drops": summary.get("dropped_packets"), "frames_skipped": summary.get("frames_skipped")}


def attack_pool(seed: int):
    """Packets with the shipped model's fingerprint under random stream ids, and the special forgeries."""
    model, codec, _ = load_codec_model(CKPT)
    rng, now = random.Random(seed), int(time.time() * 1e6)
    torch.manual_seed(seed)
    pool = [p for i in range(4) for p in encode_frame(model, torch.rand(3, 224, 224), i, codec,
                                                      stream_id=rng.getrandbits(32), capture_us=now)]
    p = wire.parse(pool[0])
    bad_bits = wire.pack(wire.Header(**{**p.header.__dict__, "bits": 5}), [p.entries[0].__class__(0, b"\x01")])
    return model, codec, pool, bad_bits


def attacker(port: int, rate: int, stop: threading.Event, relay: Relay, seed: int) -> collections.Counter:
    model, codec, pool, bad_bits = attack_pool(seed)
    rng, sent = random.Random(seed), collections.Counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        while not stop.wait(1.0 / rate):
            kind = rng.choice(["garbage", "garbage", "bits", "amplify", "replay"])
            if kind == "garbage":
                data = [mutate(rng, pool, keyed=False)]
                if rng.random() < 0.5:
                    data = [reseal(bytearray(data[0][:6] + rng.randbytes(4) + data[0][10:]), keyed=False)]
            elif kind == "bits":
                data = [bad_bits[:6] + rng.randbytes(4) + bad_bits[10:]]  # random id; CRC covers it: resealed
                data = [reseal(bytearray(data[0]), keyed=False)]
            elif kind == "amplify":
                sid = rng.getrandbits(32)
                frames = [wire.parse(pool[0]), wire.parse(pool[16])]
                data = [wire.pack(wire.Header(**{**f.header.__dict__, "stream_id": sid, "frame_index": i}),
                                  list(f.entries)) for f, i in zip(frames, (0, 2999))]
                data.append(wire.end_packet(sid, 2**32 - 1, int(time.time() * 1e6), codec.fingerprint,
                                            frames[0].header.geometry, 4, codec.mode))
            else:
                data = relay.old(rng)
            for d in data:
                s.sendto(d, ("127.0.0.1", port))
            sent[kind] += 1
    return sent


class Relay:
    """Forwards the sender's datagrams to the receiver and remembers them for replays. When the sender's
    end-of-stream packet comes by, ``ended`` is set and the packet is held back a moment, so the attackers
    (who stop on ``ended``) are quiet before the receiver goes idle: every frame written is then either
    the real stream's or an attack the receiver let through while the real stream ran."""

    def __init__(self, target: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port, self.target = self.sock.getsockname()[1], target
        self.seen: collections.deque = collections.deque(maxlen=20000)
        self.lock = threading.Lock()
        self.ended = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        while True:
            data = self.sock.recv(65535)
            if len(data) > 5 and data[5] & wire.FLAG_END:
                self.ended.set()
                time.sleep(0.5)  # attackers wake every 1/rate s; let their last datagrams land first
            out.sendto(data, ("127.0.0.1", self.target))
            with self.lock:
                self.seen.append((time.monotonic(), data))

    def old(self, rng: random.Random) -> list[bytes]:
        with self.lock:
            now = time.monotonic()
            old = [d for t, d in list(self.seen)[-200:] if 1.0 < now - t < 3.0] or [d for _, d in self.seen][:1]
        return [rng.choice(old)] if old else []


def sender(port: int, transport: str, frames: int, sid: int, fps: float) -> subprocess.Popen:
    return start("sender_encode.py", "--model-path", CKPT, "--input", "sample", "--loop", "--port", str(port),
                 "--transport", transport, "--max-frames", str(frames), "--loss", "random:0.3", "--seed", "1",
                 "--stream-id", str(sid), "--connect-timeout", "120", "--deadline-ms", "0",
                 "--fps", str(fps))


def wait_started(rx: Receiver, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not any(f"{rx.sid:08x} started" in x for x in rx.log) and time.monotonic() - t0 < timeout:
        time.sleep(0.05)


def udp_phase(args, out: Path) -> dict:
    rx = Receiver(out, "udp", random.SystemRandom().getrandbits(32), args.deadline_ms)
    relay = Relay(rx.port)
    tx = sender(relay.port, "udp", args.frames, rx.sid, args.fps)
    wait_started(rx)
    stop, result = relay.ended, {}
    th = threading.Thread(target=lambda: result.update(sent=attacker(rx.port, args.attack_rate, stop, relay,
                                                                     args.seed)), daemon=True)
    th.start()
    rx.watch_rss(after=100)
    tx_out = tx.communicate(timeout=args.frames / args.fps + 300)[0]
    stop.set()  # normally set already by the relay at the end packet
    th.join(30)
    rx.ended.wait(60)
    report = rx.finish()
    report.update(sender_exit=tx.returncode, attacks=dict(result.get("sent", {})), sender_tail=tx_out[-300:])
    return report


def slow_drip(port: int, stop: threading.Event, interval: float = 1.5, size: int = 900) -> None:
    """A TCP client that announces a ``size``-byte packet and sends it one byte per ``interval`` s."""
    with socket.create_connection(("127.0.0.1", port)) as c:
        for b in LENGTH.pack(size) + bytes(size):
            if stop.wait(interval):
                return
            try:
                c.sendall(bytes([b]))
            except OSError:
                return


def tcp_phase(args, out: Path) -> dict:
    rx = Receiver(out, "tcp", random.SystemRandom().getrandbits(32), args.deadline_ms)
    model, codec, _, _ = attack_pool(args.seed)
    hold, conns = threading.Event(), []

    def stopped():
        with socket.create_connection(("127.0.0.1", rx.port)) as c:
            for p in encode_frame(model, torch.rand(3, 224, 224), 0, codec, stream_id=rx.sid ^ 1,
                                  capture_us=int(time.time() * 1e6)):
                c.sendall(LENGTH.pack(len(p)) + p)
            hold.wait(600)

    def idle():
        conns.append(socket.create_connection(("127.0.0.1", rx.port)))

    for fn in (lambda: slow_drip(rx.port, hold), stopped, idle, idle):
        threading.Thread(target=fn, daemon=True).start()
        time.sleep(0.2)
    t0 = time.monotonic()
    rx.watch_rss(after=min(100, args.tcp_frames))
    tx = sender(rx.port, "tcp", args.tcp_frames, rx.sid, args.fps)
    tx_out = tx.communicate(timeout=args.tcp_frames / args.fps + 300)[0]
    took = time.monotonic() - t0
    rx.ended.wait(60)
    hold.set()
    for c in conns:
        c.close()
    report = rx.finish()
    report.update(sender_exit=tx.returncode, sender_seconds=round(took, 1),
                  end_confirmed='"end_confirmed": true' in tx_out, sender_tail=tx_out[-300:])
    return report


def check(name: str, r: dict, frames: int) -> list[str]:
    bad = []
    if r["exit"] != 0 or r["sender_exit"] != 0:
        bad.append(f"{name}: exit status receiver {r['exit']}, sender {r['sender_exit']}")
    if r["real_decoded"] != frames:
        bad.append(f"{name}: {r['real_decoded']} of {frames} real frames decoded")
    if r["rss_mb"].get("end", 0) - r["rss_mb"].get("after_100_frames", r["rss_mb"]["listening"]) >= 20:
        bad.append(f"{name}: RSS grew by 20 MB or more: {r['rss_mb']}")
    if r["frames_written"] > frames + (1 if name == "tcp" else 0):  # tcp: the stopped sender's one frame
        bad.append(f"{name}: {r['frames_written']} frames written for {frames} real ones")
    return bad


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    t0 = time.monotonic()
    reports = {"udp": udp_phase(args, out / "udp")}
    if args.tcp_frames:
        reports["tcp"] = tcp_phase(args, out / "tcp")
    bad = [b for name, r in reports.items()
           for b in check(name, r, args.frames if name == "udp" else args.tcp_frames)]
    print(json.dumps(reports, indent=2))
    print(f"soak took {time.monotonic() - t0:.0f} s: " + ("; ".join(bad) if bad else "all checks passed"))
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
