"""Fuzz the packet parser, the jitter buffer and the TCP framing (not a test: ~1-2 min).

    python -m benchmarks.fuzz_packets                    # 100 000 packet cases + 1 000 TCP streams
    python -m benchmarks.fuzz_packets --cases 1000000 --seed 3

Cases: random bytes; valid packets with bit flips, byte overwrites, truncations, extensions and
splices; and valid packets whose header fields or payload were mutated and then *resealed* (CRC,
and HMAC when keyed, recomputed) so the mutation reaches field checks, entropy decoding and the
reassembler. Every case goes through wire.parse -> Reassembler.push (fake clock, ticks, stream
ends). Anything but a PacketError is a failure (printed with its input, exit status 1). Memory is
checked with tracemalloc: the peak must stay under --max-mb.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import random
import socket
import struct
import sys
import time
import tracemalloc
import zlib
from collections import Counter

import torch

from codec import wire
from codec.packetize import make_codec, packetize_latent
from models import build_model
from network.reassembly import Reassembler
from network.transport import LENGTH, TcpReceiver

KEY = b"fuzz-key"
FIELDS = [(off, fmt) for off, fmt in [(5, "B"), (6, "I"), (10, "I"), (14, "Q"), (22, "H"), (24, "H"), (30, "H"),
                                      (32, "H"), (34, "H"), (36, "B"), (37, "B"), (38, "H"), (40, "H"),
                                      (42, "H"), (44, "H"), (46, "H")]]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cases", type=int, default=100_000, help="packet cases")
    p.add_argument("--tcp-streams", type=int, default=1000, help="random byte streams fed to the TCP receiver")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--max-mb", type=float, default=64.0, help="allowed tracemalloc peak")
    return p.parse_args(argv)


def reseal(data: bytearray, keyed: bool) -> bytes:
    """Recompute CRC (and HMAC) of a possibly mutated packet so it passes the integrity checks."""
    if len(data) < wire.HEADER_SIZE:
        return bytes(data)
    tag = wire.TAG_SIZE if keyed else 0
    body = data[wire.HEADER_SIZE:len(data) - tag]
    struct.pack_into("!I", data, wire.CRC_OFFSET, zlib.crc32(body, zlib.crc32(data[:wire.CRC_OFFSET])))
    if keyed and len(data) >= wire.HEADER_SIZE + tag:
        data[len(data) - tag:] = hmac.new(KEY, bytes(data[:len(data) - tag]), hashlib.sha256).digest()[:tag]
    return bytes(data)


def mutate(rng: random.Random, pool: list[bytes], keyed: bool) -> bytes:
    base = bytearray(rng.choice(pool))
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 1600))
    if kind == 1:
        for _ in range(rng.randrange(1, 4)):
            base[rng.randrange(len(base))] ^= 1 << rng.randrange(8)
        return bytes(base)
    if kind == 2:
        return bytes(base[:rng.randrange(len(base))])
    if kind == 3:
        return bytes(base) + rng.randbytes(rng.randrange(1, 300))
    if kind == 4:
        other = rng.choice(pool)
        cut = rng.randrange(len(base))
        return bytes(base[:cut]) + other[cut:]
    if kind == 5:  # a header field set to an edge value, then resealed
        off, fmt = rng.choice(FIELDS)
        edge = rng.choice([0, 1, 2, 7, 8, 255, 256, 1023, 1024, 65535, 2**31, 2**32 - 1, 2**63])
        struct.pack_into("!" + fmt, base, off, edge % (1 << (8 * struct.calcsize(fmt))))
        return reseal(base, keyed)
    if kind == 6:  # payload bytes scrambled, resealed (reaches entropy decoding)
        tag = wire.TAG_SIZE if keyed else 0
        for _ in range(rng.randrange(1, 8)):
            base[rng.randrange(wire.HEADER_SIZE, len(base) - tag)] = rng.randrange(256)
        return reseal(base, keyed)
    return bytes(base)  # an unchanged packet: duplicates, replays, reorderings


def fuzz_packets(args, rng: random.Random) -> Counter:
    torch.manual_seed(0)
    model = build_model("LRAE_VC").eval()
    outcomes: Counter = Counter()
    for keyed in (False, True):
        key = KEY if keyed else None
        codecs = [make_codec(model), make_codec(model, max_payload=64)]
        pool = []
        for codec in codecs:
            for f in range(6):
                z = model.encode(torch.rand(1, 3, 64, 64)).detach()[0]
                pool += packetize_latent(z, f, codec, stream_id=rng.choice([1, 2]), capture_us=int(1e6 * (100 + f)),
                                         key=key)
        for i in range(args.cases // 2):
            if i % 200 == 0:  # a fresh receiver now and then, so accepted paths stay exercised
                reasm = Reassembler(codecs[0], deadline_ms=30, window=4, idle_timeout=2.0)
                now = 100.0
            data = mutate(rng, pool, keyed)
            now += rng.random() * 0.005
            try:
                reasm.push(wire.parse(data, key), now)
                outcomes["accepted"] += 1
            except wire.PacketError as e:
                outcomes[e.reason] += 1
            except Exception as e:  # the one thing this script exists to find
                print(f"FAIL case {i} keyed={keyed}: {type(e).__name__}: {e}\ninput: {data.hex()}")
                raise SystemExit(1) from None
            reasm.tick(now)
            if rng.random() < 0.001:
                reasm.end_stream(now)
    return outcomes


def fuzz_tcp(args, rng: random.Random) -> Counter:
    rx = TcpReceiver("127.0.0.1", 0, packet_timeout=0.05)
    outcomes: Counter = Counter()
    try:
        for _ in range(args.tcp_streams):
            a, b = socket.socketpair()
            rx.conn = b
            b.settimeout(rx.packet_timeout)
            sizes = [0, 3, wire.HEADER_SIZE, wire.MAX_PACKET, wire.MAX_PACKET + 1, 2**32 - 1, rng.randrange(2000)]
            blob = b"".join(LENGTH.pack(rng.choice(sizes))
                            + rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randrange(1, 5)))
            a.sendall(blob)
            if rng.random() < 0.5:
                a.close()
            for _ in range(10):
                ev = rx.poll(0.05)
                outcomes[ev.kind] += 1
                if ev.kind == "closed":
                    break
            if rx.conn is not None:
                rx.conn.close()
                rx.conn = None
            a.close()
    finally:
        rx.close()
    return outcomes


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)  # the receiver's one-line warnings would flood the output
    rng = random.Random(args.seed)
    tracemalloc.start()
    t0 = time.perf_counter()
    packets = fuzz_packets(args, rng)
    t1 = time.perf_counter()
    tcp = fuzz_tcp(args, rng)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    print(f"{args.cases} packet cases in {t1 - t0:.1f} s: {dict(sorted(packets.items()))}")
    print(f"{args.tcp_streams} TCP streams in {time.perf_counter() - t1:.1f} s: {dict(tcp)}")
    print(f"peak traced memory {peak:.1f} MB (limit {args.max_mb} MB); no crash")
    if peak > args.max_mb:
        raise SystemExit(f"error: memory peak {peak:.1f} MB above {args.max_mb} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
