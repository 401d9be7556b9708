"""The LRAE-VC packet format (version 4): one self-contained packet per channel group of a frame.

Every integer is big-endian (``struct`` "!" formats). A packet is::

    fixed header (53 B) | payload (payload_len <= 1200 B) | HMAC tag (16 B, only if flag bit 0)

Fixed header:

| offset | size | field          | format | meaning                                                        |
|-------:|-----:|----------------|:------:|----------------------------------------------------------------|
|      0 |    4 | magic          | 4s     | ``b"LRVC"``                                                    |
|      4 |    1 | version        | B      | 4; any other value is refused ("version" drop)                 |
|      5 |    1 | flags          | B      | bit 0: HMAC tag appended; bit 1: end of stream; bit 2: P-frame |
|        |      |                |        | (see below); bits 3..7: a P-frame's reference age (0..31; 0 in |
|        |      |                |        | an I-frame)                                                    |
|      6 |    4 | stream_id      | I      | random per sender run; packets of another stream are foreign   |
|     10 |    4 | frame_index    | I      | 0, 1, 2, ... (end-of-stream packet: number of frames sent)     |
|     14 |    8 | capture_us     | Q      | capture time, microseconds since the Unix epoch (sender clock) |
|     22 |    2 | packet_index   | H      | 0 .. packet_count-1, channel 0 first                           |
|     24 |    2 | packet_count   | H      | packets of this frame (1..1024; 0 in an end-of-stream packet)  |
|     26 |    4 | fingerprint    | 4s     | model fingerprint (weights, config, calibration; see below)    |
|     30 |    2 | channels       | H      | latent geometry C                                              |
|     32 |    2 | height         | H      | latent geometry h                                              |
|     34 |    2 | width          | H      | latent geometry w                                              |
|     36 |    1 | bits           | B      | quantisation bits (2..8); 8 in mode 2                          |
|     37 |    1 | quant_mode     | B      | 0: calibrated ranges/tables; 1: per-frame ranges in the packet;|
|        |      |                |        | 2: learned integer tables per quality level (no DPCM)          |
|     38 |    1 | quality        | B      | quality level the frame was coded at (0 in modes 0 and 1)      |
|     39 |    2 | channel_start  | H      | first channel carried                                          |
|     41 |    2 | channel_count  | H      | channels carried (contiguous); 1 if rows are split             |
|     43 |    2 | row_start      | H      | first latent row carried (0 unless a channel is split)         |
|     45 |    2 | row_count      | H      | rows carried (h unless a channel is split)                     |
|     47 |    2 | payload_len    | H      | bytes of payload that follow (<= 1200)                         |
|     49 |    4 | crc32          | I      | zlib.crc32 of bytes 0..48 followed by the payload              |

Older versions are refused with "wire version N packet: this receiver speaks version 4; update the
sender" (a drop, reason "version"): version 1 (52 B, no ``quality`` byte; every later field one byte
earlier), version 2 (this layout, without the P-frame flag) and version 3 (P-frames, without the
reference age).

P-frames (flag bit 2; a stream of an inter codec, models/latent_p.py, models/pframe.py): the frame is
coded against the receiver's state (playback/inter.py) *after frame ``frame_index - 1 - ref_age``*, its
reference age in flag bits 3..7: 0 is the frame just before (the sender assumed it arrived), a larger
age a frame whose arrival the receiver's feedback had confirmed when the sender coded this one. It is
coded with the P codec's learned tables, and its ``fingerprint`` is the P codec's (which covers the
intra codec inside it); I-frames (bit 2 clear, age 0) carry the intra codec's fingerprint and tables.
Every packet of a frame carries the same flags. Frame type, reference and quality are in every
packet, so any one packet of a frame tells the receiver how to decode it.

Payload = a channel table, then the coded channels back to back. One table entry per channel:
``length`` (H, coded bytes of that channel) in modes 0 and 2; in mode 1 also ``lo`` (f), ``hi`` (f) - the
channel's quantiser range as float32 - and ``centre`` (B), ``table_width`` (B) - the parametric
entropy table used (codec/entropy.py). The lengths must add up to the payload exactly. A coded
channel is the range-coded row-DPCM residuals of its ``row_count x width`` quantised symbols
(codec/entropy.py: integer tables, big-endian 32-bit words, trailing zero bytes trimmed). In mode 2
it is the channel's rounded latent values themselves, minus the table's offset and clamped into its
support, coded with the table of (``quality``, channel) stored in the checkpoint (codec/learned.py).
Every packet of a frame carries the same ``quality``; the receiver decodes the frame at that level.

TCP carries each packet after a 4-byte big-endian length (network/transport.py); UDP one per datagram.
An end-of-stream packet (flag bit 1) has no payload; its ``frame_index`` is the number of frames sent.

HMAC (``--key-file``): HMAC-SHA256 over header and payload, truncated to 16 bytes (RFC 2104 sec. 5).
A receiver with a key drops packets without a valid tag; one without a key drops tagged packets.

The fingerprint is the first 4 bytes of SHA-256 over the model name, its constructor arguments,
its weights and (modes 0 and 2) the calibration or learned table tensors: a receiver running another
model, other weights or another calibration refuses the packets with a clear message instead of decoding garbage.

**Feedback packets** (receiver -> sender, I/P streams; playback/inter.py): after showing a frame the receiver
reports which channels it decoded for each of its last K frames, so one lost feedback packet is covered by
the next. Over UDP one per datagram, back to the data's source address; over TCP on the reverse direction
of the connection (network/transport.py). Layout, big-endian::

    fixed header (17 B) | count reports | HMAC tag (16 B, only if flag bit 0)

| offset | size | field        | format | meaning                                                          |
|-------:|-----:|--------------|:------:|------------------------------------------------------------------|
|      0 |    4 | magic        | 4s     | ``b"LRFB"``                                                      |
|      4 |    1 | version      | B      | 1; any other value is refused                                    |
|      5 |    1 | flags        | B      | bit 0: HMAC tag appended (as for data packets); others 0         |
|      6 |    4 | stream_id    | I      | the stream the reports are about (its data packets' stream_id)   |
|     10 |    2 | channels     | H      | C, latent channels per mask (1..MAX_FEEDBACK_CHANNELS)           |
|     12 |    1 | count        | B      | reports that follow (1..MAX_FEEDBACK_FRAMES)                     |
|     13 |    4 | crc32        | I      | zlib.crc32 of bytes 0..12 followed by the reports                |
|     17 |      | reports      |        | count x (frame_index I, mask bitmap ceil(C/8) B), oldest first,  |
|        |      |              |        | frame indices strictly increasing                                |

A mask bitmap holds channel c in bit 7 - c % 8 of byte c // 8 (channel 0 is the top bit of the first
byte); 1 = the channel was decoded (the receiver's mask convention); padding bits are 0. A frame of
which nothing arrived is reported with an all-zero mask. A feedback packet is at most MAX_PACKET bytes
(``feedback_capacity(C)`` reports fit). :func:`pack_feedback`, :func:`parse_feedback` (PacketError on
anything malformed: every length is checked before slicing).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch

MAGIC = b"LRVC"
VERSION = 4
HEADER = struct.Struct("!4sBBIIQHH4sHHHBBBHHHHHI")
HEADER_SIZE = HEADER.size  # 53
CRC_OFFSET = HEADER_SIZE - 4
MAX_PAYLOAD = 1200
TAG_SIZE = 16
MAX_PACKET = HEADER_SIZE + MAX_PAYLOAD + TAG_SIZE  # 1269: fits a 1500-byte MTU with IP/UDP headers
MAX_PACKETS_PER_FRAME = 1024
MAX_LATENT_VALUES = 1 << 22  # C*h*w bound: a receiver never allocates more than 16 MB per frame
FLAG_HMAC, FLAG_END, FLAG_INTER = 1, 2, 4
REF_AGE_SHIFT, MAX_REF_AGE = 3, 31  # flag bits 3..7: a P-frame's reference age
MODE_CALIBRATED, MODE_FRAME, MODE_LEARNED = 0, 1, 2
LENGTH_ONLY = (MODE_CALIBRATED, MODE_LEARNED)  # entries are just the coded length
ENTRY = {MODE_CALIBRATED: struct.Struct("!H"), MODE_FRAME: struct.Struct("!HffBB"), MODE_LEARNED: struct.Struct("!H")}
MIN_BITS, MAX_BITS = 2, 8


FEEDBACK_MAGIC = b"LRFB"
FEEDBACK_VERSION = 1
FEEDBACK_HEADER = struct.Struct("!4sBBIHBI")
FEEDBACK_HEADER_SIZE = FEEDBACK_HEADER.size  # 17
FEEDBACK_CRC_OFFSET = FEEDBACK_HEADER_SIZE - 4
FEEDBACK_INDEX = struct.Struct("!I")
MAX_FEEDBACK_FRAMES = 32
MAX_FEEDBACK_CHANNELS = 4096


class PacketError(ValueError):
    """A packet that is dropped; ``reason`` is a short key for counters (e.g. "crc", "auth")."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Header:
    stream_id: int
    frame_index: int
    capture_us: int
    packet_index: int
    packet_count: int
    fingerprint: bytes
    channels: int
    height: int
    width: int
    bits: int
    quant_mode: int
    quality: int = 0
    channel_start: int = 0
    channel_count: int = 0
    row_start: int = 0
    row_count: int = 0
    end: bool = False
    inter: bool = False  # a P-frame (flag bit 2)
    ref_age: int = 0  # a P-frame's reference: the receiver's state after frame frame_index - 1 - ref_age (bits 3..7)

    @property
    def geometry(self) -> tuple[int, int, int]:
        return self.channels, self.height, self.width


@dataclass(frozen=True)
class Entry:
    """One channel of a packet: its coded bytes and (mode 1) its quantiser range and table."""

    channel: int
    data: bytes
    lo: float = 0.0
    hi: float = 0.0
    centre: int = 0
    table_width: int = 0


@dataclass(frozen=True)
class Packet:
    header: Header
    entries: tuple[Entry, ...]
    size: int  # bytes on the wire (header + payload + tag)


def pack(header: Header, entries: list[Entry], key: bytes | None = None) -> bytes:
    """Serialise one packet. Raises ValueError if it does not fit the format's limits."""
    entry_fmt = ENTRY[header.quant_mode]
    table = b"".join(
        entry_fmt.pack(len(e.data)) if header.quant_mode in LENGTH_ONLY
        else entry_fmt.pack(len(e.data), e.lo, e.hi, e.centre, e.table_width) for e in entries)
    payload = table + b"".join(e.data for e in entries)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} B exceeds {MAX_PAYLOAD} B")
    flags = (FLAG_HMAC if key else 0) | (FLAG_END if header.end else 0) | (FLAG_INTER if header.inter else 0)
    if not 0 <= header.ref_age <= MAX_REF_AGE or (header.ref_age and not header.inter):
        raise ValueError(f"reference age {header.ref_age}: 0..{MAX_REF_AGE}, and only for a P-frame")
    flags |= header.ref_age << REF_AGE_SHIFT
    fields = (MAGIC, VERSION, flags, header.stream_id, header.frame_index, header.capture_us,
              header.packet_index, header.packet_count, header.fingerprint, header.channels,
              header.height, header.width, header.bits, header.quant_mode, header.quality, header.channel_start,
              len(entries), header.row_start, header.row_count, len(payload))
    head = HEADER.pack(*fields, 0)[:CRC_OFFSET]
    crc = zlib.crc32(payload, zlib.crc32(head))
    out = head + struct.pack("!I", crc) + payload
    if key:
        out += _tag(key, out)
    return out


def _tag(key: bytes, signed) -> bytes:
    """HMAC-SHA256 of ``signed``, truncated to TAG_SIZE bytes (RFC 2104 sec. 5)."""
    return hmac.new(key, signed, hashlib.sha256).digest()[:TAG_SIZE]


def _check_tag(data: bytes, signed: int, tagged: bool, key: bytes | None, reader: str = "receiver") -> None:
    """The HMAC rules of data and feedback packets: bytes 0..signed-1 are signed, the tag follows them."""
    if tagged and not key:
        raise PacketError("auth", f"packet carries an HMAC tag but this {reader} has no --key-file")
    if key and not tagged:
        raise PacketError("auth", f"unauthenticated packet (this {reader} requires an HMAC tag, --key-file)")
    if key and not hmac.compare_digest(_tag(key, memoryview(data)[:signed]), bytes(data[signed:])):
        raise PacketError("auth", "HMAC mismatch (wrong key or forged packet)")


def end_packet(stream_id: int, frames: int, capture_us: int, fingerprint: bytes,
               geometry: tuple[int, int, int], bits: int, quant_mode: int, key: bytes | None = None) -> bytes:
    """The end-of-stream packet: ``frames`` frames (0..frames-1) were sent (quality 0)."""
    c, h, w = geometry
    return pack(Header(stream_id, frames, capture_us, 0, 0, fingerprint, c, h, w, bits, quant_mode,
                       end=True), [], key)


def parse(data: bytes, key: bytes | None = None) -> Packet:
    """Check and decode one packet; raises :class:`PacketError` (never anything else) if it is bad.

    Every length is checked against the fixed limits before anything is sliced or allocated.
    """
    n = len(data)
    if n > MAX_PACKET:
        raise PacketError("oversized", f"packet of {n} B exceeds the {MAX_PACKET} B limit")
    if n >= 5 and bytes(data[:4]) == MAGIC and data[4] != VERSION:  # before the length: v1 headers are shorter
        version = data[4]
        if 1 <= version < VERSION:
            raise PacketError("version", f"wire version {version} packet: this receiver speaks version {VERSION}; "
                                         "update the sender")
        raise PacketError("version", f"unknown packet version {version} (this receiver reads {VERSION})")
    if n < HEADER_SIZE:
        raise PacketError("truncated", f"packet of {n} B is shorter than the {HEADER_SIZE} B header")
    (magic, version, flags, stream_id, frame, capture, p_index, p_count, fp, c, h, w, bits, mode, quality,
     c_start, c_count, r_start, r_count, p_len, crc) = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PacketError("magic", f"not an LRAE-VC packet (magic {magic!r})")
    ref_age = flags >> REF_AGE_SHIFT
    known = FLAG_HMAC | FLAG_END | FLAG_INTER | MAX_REF_AGE << REF_AGE_SHIFT
    if flags & ~known or (ref_age and not flags & FLAG_INTER):
        raise PacketError("fields", f"unknown flag bits 0x{flags:02x}")
    tagged = bool(flags & FLAG_HMAC)
    expected = HEADER_SIZE + p_len + (TAG_SIZE if tagged else 0)
    if p_len > MAX_PAYLOAD or n != expected:
        raise PacketError("length", f"packet is {n} B but its header announces {expected} B "
                                    f"(payload {p_len} B, limit {MAX_PAYLOAD} B)")
    body = memoryview(data)[HEADER_SIZE:HEADER_SIZE + p_len]
    if zlib.crc32(body, zlib.crc32(memoryview(data)[:CRC_OFFSET])) != crc:
        raise PacketError("crc", "CRC32 mismatch (corrupted packet)")
    _check_tag(data, HEADER_SIZE + p_len, tagged, key)
    end = bool(flags & FLAG_END)
    header = Header(stream_id, frame, capture, p_index, p_count, fp, c, h, w, bits, mode, quality,
                    c_start, c_count, r_start, r_count, end, bool(flags & FLAG_INTER), ref_age)
    _check_fields(header, p_len)
    if end:
        return Packet(header, (), n)
    return Packet(header, _entries(header, body), n)


def _check_fields(hd: Header, p_len: int) -> None:
    def bad(msg):
        raise PacketError("fields", msg)

    if not (1 <= hd.channels and 1 <= hd.height and 1 <= hd.width):
        bad(f"empty latent geometry {hd.geometry}")
    if hd.channels * hd.height * hd.width > MAX_LATENT_VALUES:
        bad(f"latent geometry {hd.geometry} exceeds {MAX_LATENT_VALUES} values")
    if not MIN_BITS <= hd.bits <= MAX_BITS:
        bad(f"quantisation bits {hd.bits} outside {MIN_BITS}..{MAX_BITS}")
    if hd.quant_mode not in ENTRY:
        bad(f"unknown quantisation mode {hd.quant_mode}")
    if hd.quality and hd.quant_mode != MODE_LEARNED:
        bad(f"quality {hd.quality} with uniform quantisation (mode {hd.quant_mode} has only quality 0)")
    if hd.inter and hd.quant_mode != MODE_LEARNED:
        bad(f"P-frame with quantisation mode {hd.quant_mode} (P-frames use learned tables, mode {MODE_LEARNED})")
    if hd.end:
        if hd.packet_count or hd.channel_count or p_len or hd.inter:
            bad("end-of-stream packet with data")
        return
    if not 1 <= hd.packet_count <= MAX_PACKETS_PER_FRAME or hd.packet_index >= hd.packet_count:
        bad(f"packet {hd.packet_index} of {hd.packet_count} (at most {MAX_PACKETS_PER_FRAME} per frame)")
    if hd.channel_count < 1 or hd.channel_start + hd.channel_count > hd.channels:
        bad(f"channels {hd.channel_start}+{hd.channel_count} outside 0..{hd.channels}")
    if hd.row_count < 1 or hd.row_start + hd.row_count > hd.height:
        bad(f"rows {hd.row_start}+{hd.row_count} outside 0..{hd.height}")
    if hd.row_count < hd.height and hd.channel_count != 1:
        bad("a packet with partial rows must carry exactly one channel")


def _entries(hd: Header, body: memoryview) -> tuple[Entry, ...]:
    fmt = ENTRY[hd.quant_mode]
    table_len = fmt.size * hd.channel_count
    if table_len > len(body):
        raise PacketError("fields", f"channel table ({table_len} B) longer than the payload ({len(body)} B)")
    rows = [fmt.unpack_from(body, i * fmt.size) for i in range(hd.channel_count)]
    if sum(r[0] for r in rows) != len(body) - table_len:
        raise PacketError("fields", "channel lengths do not add up to the payload length")
    entries, pos = [], table_len
    levels = 1 << hd.bits
    for i, row in enumerate(rows):
        data = bytes(body[pos:pos + row[0]])
        pos += row[0]
        if hd.quant_mode in LENGTH_ONLY:
            entries.append(Entry(hd.channel_start + i, data))
            continue
        _, lo, hi, centre, width = row
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi) or centre >= levels or width > 16:
            raise PacketError("fields", f"bad quantiser parameters for channel {hd.channel_start + i}")
        entries.append(Entry(hd.channel_start + i, data, lo, hi, centre, width))
    return tuple(entries)


# ---------------------------------------------------------------- feedback packets (module docstring)
def bitmap_size(channels: int) -> int:
    """Bytes of one mask bitmap of ``channels`` channels."""
    return (channels + 7) // 8


def mask_to_bitmap(mask: torch.Tensor) -> bytes:
    """Mask (1,C) or (C,), 1 = received (> 0.5) -> bitmap: channel 0 in the top bit of byte 0, padding 0."""
    bits = (mask.detach().reshape(-1).cpu() > 0.5).numpy()
    return np.packbits(bits).tobytes()


def bitmap_to_mask(bitmap: bytes, channels: int) -> torch.Tensor:
    """Bitmap of ``channels`` channels -> mask (1,C) float, 1 = received. PacketError if its length is
    not bitmap_size(channels) or a padding bit is set."""
    if len(bitmap) != bitmap_size(channels):
        raise PacketError("length", f"mask bitmap of {len(bitmap)} B for {channels} channels "
                                    f"(needs {bitmap_size(channels)} B)")
    bits = np.unpackbits(np.frombuffer(bytes(bitmap), dtype=np.uint8))
    if bits[channels:].any():
        raise PacketError("fields", "mask bitmap has padding bits set")
    return torch.from_numpy(bits[:channels].astype(np.float32))[None]


def feedback_capacity(channels: int, tagged: bool = True) -> int:
    """How many reports of ``channels`` channels fit one feedback packet (0: not even one)."""
    room = MAX_PACKET - FEEDBACK_HEADER_SIZE - (TAG_SIZE if tagged else 0)
    return min(MAX_FEEDBACK_FRAMES, room // (FEEDBACK_INDEX.size + bitmap_size(channels)))


@dataclass(frozen=True)
class Feedback:
    """One feedback packet: the masks (1,C) the receiver decoded for frames of stream ``stream_id``."""

    stream_id: int
    channels: int
    reports: tuple[tuple[int, torch.Tensor], ...]  # (frame_index, mask), oldest first


def pack_feedback(stream_id: int, reports, key: bytes | None = None) -> bytes:
    """Serialise reports [(frame_index, mask (1,C)), ...] (oldest first, at least one) of one stream.
    Raises ValueError if they break the format's limits (channel count, frame order, packet size)."""
    reports = list(reports)
    if not 1 <= len(reports) <= MAX_FEEDBACK_FRAMES:
        raise ValueError(f"a feedback packet carries 1..{MAX_FEEDBACK_FRAMES} reports, got {len(reports)}")
    channels = reports[0][1].numel()
    if not 1 <= channels <= MAX_FEEDBACK_CHANNELS or any(m.numel() != channels for _, m in reports):
        raise ValueError(f"feedback masks must all have the same 1..{MAX_FEEDBACK_CHANNELS} channels")
    indices = [int(i) for i, _ in reports]
    if any(b <= a for a, b in zip(indices, indices[1:])) or not 0 <= indices[0] or indices[-1] >= 1 << 32:
        raise ValueError(f"feedback frame indices must increase within 0..2^32-1, got {indices}")
    body = b"".join(FEEDBACK_INDEX.pack(i) + mask_to_bitmap(m) for i, m in zip(indices, (m for _, m in reports)))
    size = FEEDBACK_HEADER_SIZE + len(body) + (TAG_SIZE if key else 0)
    if size > MAX_PACKET:
        raise ValueError(f"feedback packet of {size} B exceeds {MAX_PACKET} B (see feedback_capacity)")
    head = FEEDBACK_HEADER.pack(FEEDBACK_MAGIC, FEEDBACK_VERSION, FLAG_HMAC if key else 0, stream_id, channels,
                                len(reports), 0)[:FEEDBACK_CRC_OFFSET]
    out = head + struct.pack("!I", zlib.crc32(body, zlib.crc32(head))) + body
    return out + _tag(key, out) if key else out


def parse_feedback(data: bytes, key: bytes | None = None) -> Feedback:
    """Check and decode one feedback packet; raises :class:`PacketError` (never anything else) if it is bad."""
    n = len(data)
    if n > MAX_PACKET:
        raise PacketError("oversized", f"feedback packet of {n} B exceeds the {MAX_PACKET} B limit")
    if n < FEEDBACK_HEADER_SIZE:
        raise PacketError("truncated", f"feedback packet of {n} B is shorter than its {FEEDBACK_HEADER_SIZE} B header")
    magic, version, flags, stream_id, channels, count, crc = FEEDBACK_HEADER.unpack_from(data)
    if magic != FEEDBACK_MAGIC:
        raise PacketError("magic", f"not an LRAE-VC feedback packet (magic {magic!r})")
    if version != FEEDBACK_VERSION:
        raise PacketError("version", f"feedback version {version} (this sender reads {FEEDBACK_VERSION})")
    if flags & ~FLAG_HMAC:
        raise PacketError("fields", f"unknown feedback flag bits 0x{flags:02x}")
    if not 1 <= channels <= MAX_FEEDBACK_CHANNELS or not 1 <= count <= MAX_FEEDBACK_FRAMES:
        raise PacketError("fields", f"feedback of {count} reports of {channels} channels (limits "
                                    f"{MAX_FEEDBACK_FRAMES}, {MAX_FEEDBACK_CHANNELS})")
    tagged = bool(flags & FLAG_HMAC)
    entry = FEEDBACK_INDEX.size + bitmap_size(channels)
    body_len = count * entry
    expected = FEEDBACK_HEADER_SIZE + body_len + (TAG_SIZE if tagged else 0)
    if n != expected:
        raise PacketError("length", f"feedback packet is {n} B but its header announces {expected} B")
    body = memoryview(data)[FEEDBACK_HEADER_SIZE:FEEDBACK_HEADER_SIZE + body_len]
    if zlib.crc32(body, zlib.crc32(memoryview(data)[:FEEDBACK_CRC_OFFSET])) != crc:
        raise PacketError("crc", "CRC32 mismatch (corrupted feedback packet)")
    _check_tag(data, FEEDBACK_HEADER_SIZE + body_len, tagged, key, reader="sender")
    reports, last = [], -1
    for k in range(count):
        (index,) = FEEDBACK_INDEX.unpack_from(body, k * entry)
        if index <= last:
            raise PacketError("fields", f"feedback frame indices not increasing ({last} then {index})")
        start = k * entry + FEEDBACK_INDEX.size
        reports.append((index, bitmap_to_mask(body[start:start + entry - FEEDBACK_INDEX.size], channels)))
        last = index
    return Feedback(stream_id, channels, tuple(reports))


def fingerprint(model, calibration: dict | None = None) -> bytes:
    """4-byte SHA-256 digest of model name, constructor arguments, weights and calibration tensors."""
    h = hashlib.sha256()
    h.update(str(getattr(model, "model_name", type(model).__name__)).encode())
    h.update(json.dumps(getattr(model, "config", {}), sort_keys=True, default=str).encode())
    tensors = [("w." + k, v) for k, v in model.state_dict().items()]
    tensors += [("c." + k, torch.as_tensor(v)) for k, v in (calibration or {}).items()]
    for name, t in sorted(tensors, key=lambda kv: kv[0]):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()[:4]


def read_key(path: str | None) -> bytes | None:
    """The shared HMAC key from ``--key-file`` (surrounding whitespace removed), or None."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            key = f.read(4096).strip()
    except OSError as e:
        raise ValueError(f"cannot read key file {path}: {e.strerror}") from None
    if not key:
        raise ValueError(f"key file {path} is empty")
    return key
