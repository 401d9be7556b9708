"""I/P streams: the feedback packet format (codec/wire.py) and its reports (network/feedback.py)."""

import pytest
import torch

from codec import wire
from network.feedback import FeedbackReader, FeedbackReports

CHANNELS = 8


# ---------------------------------------------------------------- the packet format
def masks(n: int, channels: int = CHANNELS, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(1, channels, generator=g) > 0.3).float() for _ in range(n)]


@pytest.mark.parametrize("channels", [1, 8, 13, 192])
@pytest.mark.parametrize("key", [None, b"secret"])
def test_feedback_round_trip(channels, key):
    reports = list(zip([3, 4, 7, 2**32 - 1], masks(4, channels)))
    data = wire.pack_feedback(0xDEADBEEF, reports, key)
    assert data[:4] == b"LRFB" and len(data) == 17 + 4 * (4 + (channels + 7) // 8) + (16 if key else 0)
    fb = wire.parse_feedback(data, key)
    assert (fb.stream_id, fb.channels) == (0xDEADBEEF, channels)
    assert [i for i, _ in fb.reports] == [3, 4, 7, 2**32 - 1]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(fb.reports, reports))


def test_bitmap_layout_and_padding():
    mask = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 1, 1, 0]])
    assert wire.mask_to_bitmap(mask) == bytes([0b10000001, 0b10000000])  # channel 0 in the top bit
    assert torch.equal(wire.bitmap_to_mask(bytes([0b10000001, 0b10000000]), 10), mask)
    with pytest.raises(wire.PacketError, match="padding"):
        wire.bitmap_to_mask(bytes([0, 0b00100000]), 10)
    with pytest.raises(wire.PacketError, match="bitmap of 1 B"):
        wire.bitmap_to_mask(b"\x00", 10)


def test_corrupt_truncated_and_foreign_feedback_is_refused():
    data = wire.pack_feedback(7, list(zip([1, 2], masks(2))))
    for n in range(len(data)):  # every truncation
        with pytest.raises(wire.PacketError):
            wire.parse_feedback(data[:n])
    for i in range(len(data)):  # every single-byte corruption
        bad = bytearray(data)
        bad[i] ^= 0x41
        with pytest.raises(wire.PacketError):
            wire.parse_feedback(bytes(bad))
    with pytest.raises(wire.PacketError, match="longer|announces"):
        wire.parse_feedback(data + b"\x00")
    head = wire.FEEDBACK_HEADER.pack(b"LRFB", 1, 0, 7, 60000, 200, 0)  # limits checked before any slicing
    with pytest.raises(wire.PacketError, match="limits"):
        wire.parse_feedback(head)
    with pytest.raises(wire.PacketError, match="magic"):
        wire.parse_feedback(b"LRVC" + data[4:])
    tagged = wire.pack_feedback(7, list(zip([1], masks(1))), b"k1")
    for key, packet, reason in ((None, tagged, "has no --key-file"), (b"k1", data, "unauthenticated"),
                                (b"k2", tagged, "HMAC mismatch")):
        with pytest.raises(wire.PacketError, match=reason):
            wire.parse_feedback(packet, key)
    with pytest.raises(ValueError, match="increase"):
        wire.pack_feedback(7, list(zip([2, 2], masks(2))))
    reader = FeedbackReader(7, CHANNELS)
    other = wire.pack_feedback(8, list(zip([1], masks(1))))
    narrow = wire.pack_feedback(7, list(zip([1], masks(1, 4))))
    taken = reader.take([b"junk", data[:-1], other, narrow, data])
    expected = wire.parse_feedback(data).reports
    assert [i for i, _ in taken] == [1, 2] and all(torch.equal(a, b) for (_, a), (_, b) in zip(taken, expected))
    assert reader.received == 1 and reader.latest == 2
    assert dict(reader.dropped) == {"truncated": 1, "length": 1, "foreign": 1, "geometry": 1}


def test_reports_cover_the_last_frames_of_a_stream():
    reports = FeedbackReports(frames=3)
    for t, m in enumerate(masks(5)):
        data = reports.add(9, t, m)
    assert [i for i, _ in wire.parse_feedback(data).reports] == [2, 3, 4]
    data = reports.add(10, 0, masks(1)[0])  # a new stream starts its own list
    assert [i for i, _ in wire.parse_feedback(data).reports] == [0] and reports.sent == 6
