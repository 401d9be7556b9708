"""Quantisation, entropy coding, the packet format and packetisation (fast, no sockets)."""

import random
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec import entropy, wire
from codec.packetize import (
    FrameAssembly,
    decode_packets,
    encode_frame,
    make_codec,
    packetize_latent,
)
from codec.quant import calibrate, dequantize, fake_quantize, quantize, straight_through_quantizer
from models import build_model
from network.reassembly import Reassembler


@pytest.fixture(scope="module")
def lrae():
    torch.manual_seed(0)
    return build_model("LRAE_VC").eval()


@pytest.fixture(scope="module")
def frames():
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 3, 32, 32, generator=g)


# ---------------------------------------------------------------- quantisation
def test_quantize_roundtrip_error_is_half_a_step():
    z = torch.randn(2, 3, 5, 5)
    lo, hi = z.amin(dim=(0, 2, 3)), z.amax(dim=(0, 2, 3))
    q = quantize(z, 6, lo, hi)
    assert q.min() >= 0 and q.max() <= 63
    err = (dequantize(q, 6, lo, hi) - z).abs().amax(dim=(0, 2, 3))
    assert bool((err <= (hi - lo) / 63 / 2 + 1e-6).all())


def test_fake_quantize_forward_matches_and_gradient_is_straight_through():
    z = torch.tensor([[[[-2.0, 0.1, 0.5, 3.0]]]], requires_grad=True)
    lo, hi = torch.tensor([0.0]), torch.tensor([1.0])
    out = fake_quantize(z, 4, lo, hi)
    assert torch.equal(out.detach(), dequantize(quantize(z.detach(), 4, lo, hi), 4, lo, hi))
    out.sum().backward()
    assert z.grad.flatten().tolist() == [0.0, 1.0, 1.0, 0.0]  # clipped values get no gradient
    q = straight_through_quantizer(5)
    zz = torch.randn(2, 4, 3, 3, requires_grad=True)
    q(zz).sum().backward()
    assert torch.equal(zz.grad, torch.ones_like(zz))  # per-sample min/max: nothing is clipped


def test_calibrate_shapes_counts_and_relu_zero(frames):
    torch.manual_seed(0)
    pnc = build_model("PNC").eval()
    x = frames[:, :, :28, :28]
    cal = calibrate(pnc, [x[:2], {"x": x[2:]}], bits=5)
    assert cal["lo"].shape == (10,) and cal["counts"].shape == (10, 32)
    assert int(cal["bits"]) == 5 and bool((cal["counts"] >= 1).all())
    assert bool((cal["lo"] == 0).all())  # ReLU latent keeps exact zeros


# ---------------------------------------------------------------- entropy coding
def test_tables_are_exact_integers():
    t = entropy.table_from_counts([0, 5, 1000, 3])
    assert t.sum() == entropy.TOTAL and t.min() >= 1 and t.dtype == np.int64
    for c, w in [(0, 0), (7, 3), (63, 16), (31, 1)]:
        p = entropy.parametric_table(64, c, w)
        assert p.sum() == entropy.TOTAL and p.min() >= 1
        if w:
            assert int(np.argmax(p)) == c


def test_coded_bytes_are_pinned():
    """Bit-exact across machines and library versions: these bytes must never change."""
    sym = np.array([(i * 7) % 64 for i in range(100)])
    data = entropy.encode_symbols(sym, entropy.table_from_counts(np.arange(1, 65)))
    assert data.hex() == ("00006e2c2e5b33e1e28e244ffb2c4670272c2b177f360e39df760f5088bcb5aa708f3577f3"
                          "33f91f56949cc51f315c07e3d05dd886ec1c02ba19bfa94ebda9a432bf9cd018595483e1"
                          "8819d216f2638d")
    sym2 = np.array([20 + ((i * 5) % 9) - 4 for i in range(100)])
    data2 = entropy.encode_symbols(sym2, entropy.parametric_table(64, 20, 5))
    assert data2.hex() == "161205b70703a486657252950e480e3914ab794b9520a41a3555da2216186aee43870bedac0c7153785047c0"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 31), min_size=0, max_size=300), st.integers(0, 31), st.integers(0, 16))
def test_entropy_roundtrip(symbols, centre, width):
    table = entropy.parametric_table(32, centre, width)
    data = entropy.encode_symbols(np.array(symbols, dtype=np.int64), table)
    assert entropy.decode_symbols(data, len(symbols), table).tolist() == symbols


# ---------------------------------------------------------------- packet format
def header(**kw):
    base = dict(stream_id=7, frame_index=3, capture_us=123456789, packet_index=1, packet_count=4,
                fingerprint=b"abcd", channels=16, height=4, width=4, bits=6, quant_mode=1,
                channel_start=2, channel_count=1, row_start=0, row_count=4)
    base.update(kw)
    return wire.Header(**base)


def test_header_layout_is_53_bytes_big_endian():
    assert wire.HEADER_SIZE == 53 and wire.HEADER.format.startswith("!")
    p = wire.pack(header(), [wire.Entry(2, b"xyz", -1.0, 2.0, 5, 3)])
    assert p[:4] == b"LRVC" and p[4] == 4
    assert struct.unpack("!I", p[10:14])[0] == 3  # frame index, network order
    assert p[37] == 1 and p[38] == 0 and struct.unpack("!HH", p[39:43]) == (2, 1)  # mode, quality, channels
    learned = wire.pack(header(quant_mode=wire.MODE_LEARNED, quality=5), [wire.Entry(2, b"xyz")])
    assert learned[38] == 5 and wire.parse(learned).header.quality == 5
    with pytest.raises(wire.PacketError, match="only quality 0"):  # uniform modes have one level
        wire.parse(wire.pack(header(quality=1), [wire.Entry(2, b"xyz", -1.0, 2.0, 5, 3)]))
    parsed = wire.parse(p)
    assert parsed.header == header() and parsed.entries[0].data == b"xyz" and parsed.size == len(p)


def test_every_single_byte_corruption_and_truncation_is_refused():
    p = wire.pack(header(), [wire.Entry(2, bytes(range(40)), 0.0, 1.0, 0, 0)])
    for i in range(len(p)):
        bad = bytearray(p)
        bad[i] ^= 0x5A
        with pytest.raises(wire.PacketError):
            wire.parse(bytes(bad))
    for n in range(len(p)):
        with pytest.raises(wire.PacketError):
            wire.parse(p[:n])
    with pytest.raises(wire.PacketError, match="exceeds"):
        wire.parse(p + b"\0" * wire.MAX_PACKET)


def test_p_frame_flag_round_trips_and_needs_learned_tables():
    hd = header(quant_mode=wire.MODE_LEARNED, bits=8, quality=1, inter=True)
    packet = wire.pack(hd, [wire.Entry(2, b"ab")])
    assert packet[5] & wire.FLAG_INTER and wire.parse(packet).header == hd
    assert not wire.parse(wire.pack(header(), [wire.Entry(2, b"ab", 0.0, 1.0, 0, 0)])).header.inter
    with pytest.raises(wire.PacketError, match="P-frame with quantisation mode 1") as e:
        wire.parse(wire.pack(header(inter=True), [wire.Entry(2, b"ab", 0.0, 1.0, 0, 0)]))
    assert e.value.reason == "fields"


def test_reference_age_round_trips_in_the_flags_and_only_for_p_frames():
    for age in (0, 1, 7, wire.MAX_REF_AGE):
        hd = header(quant_mode=wire.MODE_LEARNED, bits=8, quality=1, inter=True, ref_age=age)
        packet = wire.pack(hd, [wire.Entry(2, b"ab")])
        assert packet[5] >> 3 == age and wire.parse(packet).header == hd
    for bad in (header(quant_mode=wire.MODE_LEARNED, bits=8, ref_age=1),  # an I-frame has no reference
                header(quant_mode=wire.MODE_LEARNED, bits=8, inter=True, ref_age=wire.MAX_REF_AGE + 1)):
        with pytest.raises(ValueError, match="reference age"):
            wire.pack(bad, [wire.Entry(2, b"ab")])
    i_frame = bytearray(wire.pack(header(quant_mode=wire.MODE_LEARNED, bits=8), [wire.Entry(2, b"ab")]))
    i_frame[5] |= 2 << 3  # forged: an I-frame with an age (the CRC covers the flags; recompute it)
    i_frame[49:53] = struct.pack("!I", zlib.crc32(bytes(i_frame[53:]), zlib.crc32(bytes(i_frame[:49]))))
    with pytest.raises(wire.PacketError, match="unknown flag bits") as e:
        wire.parse(bytes(i_frame))
    assert e.value.reason == "fields"


def test_unknown_version_and_hmac():
    p = bytearray(wire.pack(header(), [wire.Entry(2, b"ab", 0.0, 1.0, 0, 0)]))
    p[4] = 9
    with pytest.raises(wire.PacketError, match="unknown packet version 9") as e:
        wire.parse(bytes(p))
    assert e.value.reason == "version"
    p[4] = 1  # a version-1 sender: refused with what to do, whatever its (shorter) length
    for data in (bytes(p), bytes(p[:52])):
        with pytest.raises(wire.PacketError, match="wire version 1 packet: this receiver speaks version 4; "
                                                   "update the sender") as e:
            wire.parse(data)
        assert e.value.reason == "version"
    for old in (2, 3):  # this layout without the P-frame flag (2), without the reference age (3)
        p[4] = old
        with pytest.raises(wire.PacketError, match=f"wire version {old} packet: this receiver speaks version 4") as e:
            wire.parse(bytes(p))
        assert e.value.reason == "version"
    signed = wire.pack(header(), [wire.Entry(2, b"ab", 0.0, 1.0, 0, 0)], key=b"secret")
    assert wire.parse(signed, key=b"secret").header == header()
    for key, pkt in [(b"wrong", signed), (None, signed), (b"secret", wire.pack(header(), []))]:
        with pytest.raises(wire.PacketError) as e:
            wire.parse(pkt, key=key)
        assert e.value.reason in ("auth", "fields")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1400))
def test_parser_refuses_arbitrary_bytes_cleanly(data):
    try:
        wire.parse(data)
    except wire.PacketError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1),
       st.integers(1, 64), st.integers(1, 64), st.integers(1, 64), st.integers(2, 8), st.binary(max_size=300),
       st.data())
def test_parser_roundtrips_valid_packets(stream, frame, capture, c, h, w, bits, payload, data):
    count = data.draw(st.integers(1, 1024))
    hd = header(stream_id=stream, frame_index=frame, capture_us=capture, packet_index=data.draw(
        st.integers(0, count - 1)), packet_count=count, channels=c, height=h, width=w, bits=bits,
        quant_mode=0, channel_start=data.draw(st.integers(0, c - 1)), channel_count=1, row_start=0, row_count=h)
    p = wire.parse(wire.pack(hd, [wire.Entry(hd.channel_start, payload)]))
    assert p.header == hd and p.entries[0].data == payload


# ---------------------------------------------------------------- packetisation
@pytest.mark.parametrize("calibrated", [False, True])
def test_encode_decode_frame_roundtrip(lrae, frames, calibrated):
    cal = calibrate(lrae, [frames], bits=6) if calibrated else None
    codec = make_codec(lrae, cal)
    x = frames[0]
    packets = encode_frame(lrae, x, 5, codec)
    assert len(packets) == 16 and all(len(p) <= wire.MAX_PACKET for p in packets)
    z, mask = decode_packets(packets, codec)
    z_ref = lrae.encode(x[None]).detach()
    lo, hi = (cal["lo"], cal["hi"]) if calibrated else (z_ref.amin(dim=(0, 2, 3)), z_ref.amax(dim=(0, 2, 3)))
    assert torch.equal(mask, torch.ones(1, 16))
    b = codec.bits
    assert torch.allclose(z, dequantize(quantize(z_ref, b, lo, hi), b, lo, hi), atol=1e-6)
    z2, mask2 = decode_packets(packets[::3], codec)
    assert mask2[0].tolist() == [float(i % 3 == 0) for i in range(16)]
    assert torch.equal(z2[0, 1], torch.zeros_like(z2[0, 1])) and torch.equal(z2[0, 0], z[0, 0])


def test_stripes_groups_and_foreign_models(lrae):
    z = lrae.encode(torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(2))).detach()[0]
    striped = make_codec(lrae, max_payload=64)
    packets = packetize_latent(z, 0, striped)
    assert len(packets) > 16 and all(len(p) - wire.HEADER_SIZE <= 64 for p in packets)
    full, _ = decode_packets(packets, striped)
    ref, _ = decode_packets(packetize_latent(z, 0, make_codec(lrae)), make_codec(lrae))
    assert torch.equal(full, ref)
    _, mask = decode_packets(packets[1:], striped)  # a channel with a missing stripe is lost
    assert mask[0, 0] == 0 and mask[0, 1:].sum() == 15
    grouped = make_codec(lrae, channels_per_packet=4)
    assert len(packetize_latent(z, 0, grouped)) == 4
    other = build_model("LRAE_VC", width=32).eval()
    with pytest.raises(wire.PacketError, match="another model"):
        decode_packets(packets, make_codec(other))




# ---------------------------------------------------------------- the jitter buffer
def stream_packets(lrae, frames, stream_id=1, key=None):
    codec = make_codec(lrae)
    return codec, [[wire.parse(p, key) for p in packetize_latent(
        lrae.encode(x[None]).detach()[0], i, codec, stream_id=stream_id, capture_us=int(1e6 * (100 + i)), key=key)]
        for i, x in enumerate(frames)]


def test_reassembler_accounts_every_frame_and_drops_bad_packets(lrae, frames):
    codec, pk = stream_packets(lrae, frames)
    r = Reassembler(codec, deadline_ms=50, window=4)
    out, drops = [], []

    def push(p, now):
        try:
            out.extend(r.push(p, now))
        except wire.PacketError as e:
            drops.append(e.reason)

    for p in pk[0][:5]:
        push(p, 100.0)
    push(pk[0][0], 100.0)  # duplicate
    for p in pk[2]:  # frame 1 lost entirely; frame 2 complete
        push(p, 102.0)
    assert [f.index for f in out] == []  # frame 0 still open: waits for its deadline
    out += r.tick(100.06)  # frame 0's deadline passed
    assert [(f.index, f.reason) for f in out] == [(0, "deadline"), (1, "missing"), (2, "complete")]
    push(pk[0][6], 103.0)  # late
    _, foreign = stream_packets(lrae, frames[:1], stream_id=2)
    push(foreign[0][0], 103.0)
    out += r.end_stream(104.0, frames=4)
    assert [f.index for f in out] == [0, 1, 2, 3] and out[3].reason == "missing"
    push(pk[3][0], 105.0)  # a replay of the ended stream
    assert drops == ["duplicate", "late", "foreign", "replay"]
    assert len(out[0].received) == 5 and out[0].assembly.result()[1].sum() == 5


def test_reassembler_window_bounds_open_frames(lrae, frames):
    codec, pk = stream_packets(lrae, list(frames) * 3)
    r = Reassembler(codec, deadline_ms=1e6, window=3)
    out = []
    for i, packets in enumerate(pk):
        out += r.push(packets[0], 100.0 + i)  # one packet per frame: nothing completes
        assert len(r.stream.open) <= 3
    assert [f.index for f in out] == list(range(len(pk) - 3))
    with pytest.raises(wire.PacketError, match="ahead"):
        r.push(wire.parse(wire.pack(wire.Header(**{**pk[0][0].header.__dict__, "frame_index": 10**6}),
                                    list(pk[0][0].entries))), 200.0)


def test_assembly_rejects_geometry_change(lrae, frames):
    codec, pk = stream_packets(lrae, frames[:1])
    asm = FrameAssembly(codec, (16, 8, 8))
    with pytest.raises(wire.PacketError):
        asm.add(pk[0][0])


def test_reassembler_reorders_within_the_window_and_bounds_geometry(lrae, frames):
    codec, pk = stream_packets(lrae, frames[:3])
    shuffled = [p for f in pk for p in f]
    random.Random(0).shuffle(shuffled)
    r = Reassembler(codec, deadline_ms=1e6, window=8)
    out = []
    for p in shuffled:
        out += r.push(p, 100.0)
    assert [(f.index, f.reason) for f in out] == [(0, "complete"), (1, "complete"), (2, "complete")]
    small = Reassembler(codec, max_side=16)  # 32x32 frames -> 4x4 latents; 16 px allows 2x2
    with pytest.raises(wire.PacketError, match="larger than this receiver decodes"):
        small.push(pk[0][0], 100.0)
