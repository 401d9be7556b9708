"""Latent <-> packets, offline: the one path the sender, the receiver, tests and evaluation share.

    codec = codec_from_checkpoint(model, ckpt)                 # or make_codec(model, calibration)
    packets = encode_frame(model, x, frame_index, codec)      # list[bytes], channel 0 first
    kept = [p for p, ok in zip(packets, LossEmulator("random:0.3", seed=1).pattern(f, len(packets))) if ok]
    z, mask = decode_packets(kept, codec, geometry=codec_geometry)  # (1,C,h,w), (1,C); 1 = received
    shown = Player(model, "zero+repeat-last").show(z, mask)   # playback.conceal: fill, decode, conceal

    # a model with quality levels and learned tables (codec.mode == MODE_LEARNED, LRAE_RD):
    packets = encode_frame(model, x, frame_index, codec, quality=3)
    asm = decode_frame(kept, codec, geometry)                  # asm.result() -> (z, mask); asm.quality: 3
    shown = Player(model).show(*asm.result(), quality=asm.quality)

Loss emulation is network.loss (LossEmulator); concealment and decoding are playback.conceal.

Packetisation: each channel is quantised (codec/quant.py), turned into row-DPCM residuals and
range coded on its own (codec/entropy.py). Channels go into packets in order, ``channels_per_packet`` at most per packet
(default 1, so one lost packet = one lost channel, as the models are trained), never more than
``max_payload`` bytes of payload; a channel too large for one packet is split into row stripes.
Every packet decodes on its own. A channel counts as received (mask 1) only if all its rows arrived.
In learned-table mode (codec/learned.py) a channel's rounded latent values are coded with the table of
the frame's quality level and channel, without DPCM; the level travels in every packet's header.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from codec import entropy
from codec.learned import LearnedTables, is_learned, load_tables
from codec.quant import DEFAULT_BITS, check_bits, dequantize, frame_ranges, quantize
from codec.wire import (
    ENTRY,
    MAX_PACKETS_PER_FRAME,
    MAX_PAYLOAD,
    MODE_CALIBRATED,
    MODE_FRAME,
    MODE_LEARNED,
    Entry,
    Header,
    Packet,
    PacketError,
    fingerprint,
    pack,
    parse,
)

log = logging.getLogger(__name__)


@dataclass
class WireCodec:
    """What sender and receiver must agree on. ``accept`` maps quant mode -> fingerprint accepted.
    ``levels``: quality levels (1 for the uniform modes); ``learned``: the tables of mode 2."""

    channels: int
    bits: int
    mode: int
    accept: dict[int, bytes]
    lo: torch.Tensor | None = None  # (C,) calibrated ranges (mode 0)
    hi: torch.Tensor | None = None
    tables: list[np.ndarray] | None = None  # per-channel integer tables (mode 0)
    max_payload: int = MAX_PAYLOAD
    channels_per_packet: int = 1
    stride: int = 1
    levels: int = 1
    learned: LearnedTables | None = None
    inter: WireCodec | None = None  # an I/P stream's P-frame codec (this one codes its I-frames)

    @property
    def fingerprint(self) -> bytes:
        return self.accept[self.mode]

    def for_frame(self, inter: bool) -> WireCodec:
        """The codec of an I-frame (this one) or of a P-frame (``inter``; PacketError "model" if none)."""
        if not inter:
            return self
        if self.inter is None:
            raise PacketError("model", "P-frame packet, but this receiver's model has no P-frame codec "
                                       "(run it with the inter codec's checkpoint)")
        return self.inter


def make_codec(model, calibration: dict | None = None, bits: int | None = None,
               max_payload: int = MAX_PAYLOAD, channels_per_packet: int = 1) -> WireCodec:
    """The codec of a frame model: learned tables if ``calibration`` holds them (codec/learned.py), else
    calibrated if it fits (and ``bits`` agrees), else per frame. A model with several quality levels
    (``model.levels``) needs learned tables: ValueError without them, or with ``bits``."""
    channels, levels = int(model.latent_channels), int(model.levels)
    if bits is not None:
        check_bits(bits)
    if not 1 <= channels_per_packet <= 255:
        raise ValueError(f"channels per packet must be 1..255, got {channels_per_packet}")
    if not 64 <= max_payload <= MAX_PAYLOAD:
        raise ValueError(f"max payload must be 64..{MAX_PAYLOAD} B, got {max_payload}")
    common = dict(max_payload=max_payload, channels_per_packet=channels_per_packet,
                  stride=int(getattr(model, "stride", 1)))
    if is_learned(calibration) or levels > 1:
        if not is_learned(calibration):
            raise ValueError(f"{model.model_name} has {levels} quality levels but its checkpoint has no learned "
                             "entropy tables; add them with: python -m models.rd_tables CHECKPOINT")
        if bits is not None:
            raise ValueError(f"{model.model_name} codes with learned tables per quality level; --bits does not "
                             "apply (choose a quality level instead)")
        tables = load_tables(calibration, channels, levels)
        return WireCodec(channels, 8, MODE_LEARNED, {MODE_LEARNED: fingerprint(model, calibration)},
                         levels=levels, learned=tables, **common)
    accept = {MODE_FRAME: fingerprint(model)}
    cal = _valid_calibration(calibration, channels)
    if cal is not None:
        accept[MODE_CALIBRATED] = fingerprint(model, calibration)
        cal_bits = int(cal["bits"])
        if bits is None or bits == cal_bits:
            tables = [entropy.table_from_counts(row.numpy()) for row in cal["counts"]]
            return WireCodec(channels, cal_bits, MODE_CALIBRATED, accept, cal["lo"].float(),
                             cal["hi"].float(), tables, **common)
        log.warning("checkpoint calibrated for %d bits, %d asked: using per-frame ranges", cal_bits, bits)
    return WireCodec(channels, bits or DEFAULT_BITS, MODE_FRAME, accept, **common)


def _valid_calibration(cal: dict | None, channels: int) -> dict | None:
    if not cal:
        return None
    try:
        bits = check_bits(int(cal["bits"]))
        ok = (tuple(cal["lo"].shape) == (channels,) and tuple(cal["hi"].shape) == (channels,)
              and tuple(cal["counts"].shape) == (channels, 1 << bits) and bool((cal["counts"] >= 1).all()))
    except (KeyError, TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        log.warning("ignoring a malformed codec calibration in the checkpoint; using per-frame ranges")
        return None
    return cal


def codec_from_checkpoint(model, ckpt: dict | None, bits: int | None = None, **kwargs) -> WireCodec:
    """:func:`make_codec` with the calibration a training script stored in ``ckpt["extra"]["codec"]``.
    An inter codec (kind ``inter``, models/pframe.py) gives its intra codec's codec, with the P-frame codec
    (tables in ``ckpt["extra"]["p_codec"]``) as its ``inter``."""
    extra = (ckpt or {}).get("extra") or {}
    extra = extra if isinstance(extra, dict) else {}
    if getattr(model, "kind", None) == "inter":
        if bits is not None:
            raise ValueError(f"{model.model_name} codes with learned tables per quality level; --bits does not apply")
        codec = make_codec(model.intra, extra.get("codec"), **kwargs)
        codec.inter = make_codec(model, extra.get("p_codec"), **kwargs)
        return codec
    return make_codec(model, extra.get("codec"), bits, **kwargs)


# ---------------------------------------------------------------- sender side
def _coded_units(z: torch.Tensor, codec: WireCodec, quality: int = 0) -> list[list[tuple[int, int, Entry]]]:
    """Per channel, a list of (row_start, row_count, Entry) pieces that each fit one packet."""
    c, h, w = z.shape
    learned = codec.mode == MODE_LEARNED
    if learned:
        q = codec.learned.symbols(z, quality)
    else:
        lo, hi = (codec.lo, codec.hi) if codec.mode == MODE_CALIBRATED else (r[0] for r in frame_ranges(z[None]))
        q = quantize(z.float(), codec.bits, lo, hi).numpy()
    levels = 1 << codec.bits
    code = (lambda rows: rows) if learned else (lambda rows: entropy.to_residuals(rows, levels))
    entry_size = ENTRY[codec.mode].size
    units = []
    for ch in range(c):
        params = {}
        if learned:
            table = codec.learned.tables[quality][ch]
        elif codec.mode == MODE_CALIBRATED:
            table = codec.tables[ch]
        else:
            hist = np.bincount(entropy.to_residuals(q[ch], levels).reshape(-1), minlength=levels)
            centre, width = entropy.best_parametric(hist)
            table = entropy.parametric_table(levels, centre, width)
            params = dict(lo=float(lo[ch]), hi=float(hi[ch]), centre=centre, table_width=width)
        stripes = 1
        while True:
            rows = -(-h // stripes)
            pieces = [(r0, min(rows, h - r0)) for r0 in range(0, h, rows)]
            coded = [entropy.encode_symbols(code(q[ch, r0:r0 + n]), table) for r0, n in pieces]
            if all(entry_size + len(d) <= codec.max_payload for d in coded):
                break
            if rows == 1:
                raise ValueError(f"one latent row of {w} values does not fit {codec.max_payload} B")
            stripes += 1
        units.append([(r0, n, Entry(ch, d, **params)) for (r0, n), d in zip(pieces, coded)])
    return units


def packetize_latent(z: torch.Tensor, frame_index: int, codec: WireCodec, *, quality: int = 0, stream_id: int = 0,
                     capture_us: int = 0, key: bytes | None = None, inter: bool = False,
                     ref_age: int = 0) -> list[bytes]:
    """One frame's latent z (C,h,w) -> packets (bytes), channel 0 first. ``quality``: the level z was
    encoded at (learned mode; 0 otherwise), carried in every packet's header. ``inter``: z is a P-frame's
    latent, coded with ``codec.inter``'s tables (the P-frame flag in every header), against the receiver's
    state after frame ``frame_index - 1 - ref_age`` (codec/wire.py)."""
    codec = codec.for_frame(inter)
    if z.dim() == 4:
        z = z[0]
    c, h, w = z.shape
    if c != codec.channels:
        raise ValueError(f"latent has {c} channels, the codec {codec.channels}")
    check_quality(quality, codec)
    entry_size = ENTRY[codec.mode].size
    groups: list[tuple[int, int, list[Entry]]] = []  # (row_start, row_count, entries)
    for ch, pieces in enumerate(_coded_units(z.detach().cpu(), codec, quality)):
        if len(pieces) > 1:
            groups.extend((r0, n, [e]) for r0, n, e in pieces)
            continue
        entry = pieces[0][2]
        last = groups[-1] if groups else None
        if (last is not None and last[1] == h and len(last[2]) < codec.channels_per_packet
                and ch // codec.channels_per_packet == last[2][0].channel // codec.channels_per_packet
                and sum(entry_size + len(e.data) for e in last[2]) + entry_size + len(entry.data)
                <= codec.max_payload):
            last[2].append(entry)
        else:
            groups.append((0, h, [entry]))
    if len(groups) > MAX_PACKETS_PER_FRAME:
        raise ValueError(f"a frame needs {len(groups)} packets, more than {MAX_PACKETS_PER_FRAME}")
    out = []
    for i, (r0, n, entries) in enumerate(groups):
        hd = Header(stream_id, frame_index, capture_us, i, len(groups), codec.fingerprint, c, h, w,
                    codec.bits, codec.mode, quality, entries[0].channel, len(entries), r0, n, inter=inter,
                    ref_age=ref_age)
        out.append(pack(hd, entries, key))
    return out


@torch.no_grad()
def encode_frame(model, x: torch.Tensor, frame_index: int, codec: WireCodec, quality: int = 0,
                 **kwargs) -> list[bytes]:
    """Frame x (3,H,W) or (1,3,H,W), float in [0,1] or uint8 -> packets at ``quality`` (a learned-mode
    codec's level; 0 otherwise). kwargs: see packetize_latent."""
    if x.dim() == 3:
        x = x[None]
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    return packetize_latent(encode_latent(model, x, codec, quality)[0], frame_index, codec, quality=quality, **kwargs)


def encode_latent(model, x: torch.Tensor, codec: WireCodec, quality: int = 0) -> torch.Tensor:
    """Frames x (B,3,H,W) in [0,1] -> the latent the codec packetizes: at ``quality`` in learned mode."""
    check_quality(quality, codec)
    return model.encode(x, quality) if codec.mode == MODE_LEARNED else model.encode(x)


def check_quality(quality: int, codec: WireCodec) -> int:
    if not isinstance(quality, int) or not 0 <= quality < codec.levels:
        raise ValueError(f"quality must be 0..{codec.levels - 1} for this codec, got {quality!r}")
    return quality


# ---------------------------------------------------------------- receiver side
def check_compatible(hd: Header, codec: WireCodec) -> None:
    """Refuse a packet made by another model, calibration or latent layout (PacketError "model")."""
    codec = codec.for_frame(hd.inter)
    want = codec.accept.get(hd.quant_mode)
    if want is None:
        raise PacketError("model", "packet uses calibrated quantisation, but this model's checkpoint "
                                   "has no calibration (codec) tables")
    if hd.fingerprint != want:
        raise PacketError("model", f"packet from model {hd.fingerprint.hex()}, this receiver runs "
                                   f"{want.hex()} (another model, weights or calibration)")
    if hd.channels != codec.channels:
        raise PacketError("model", f"packet has {hd.channels} latent channels, the model {codec.channels}")
    if hd.quality >= codec.levels:
        raise PacketError("model", f"packet at quality {hd.quality}, the model has levels 0..{codec.levels - 1}")


class FrameAssembly:
    """Collects one frame's packets into a latent: entropy decoding happens as packets arrive.
    ``quality``, ``inter`` (a P-frame) and ``ref_age`` (its reference): as the packets' headers say (None
    until one arrived)."""

    def __init__(self, codec: WireCodec, geometry: tuple[int, int, int]):
        c, h, w = geometry
        self.codec, self.geometry = codec, (c, h, w)
        self.z = torch.zeros(1, c, h, w)
        self.rows = np.zeros((c, h), dtype=bool)
        self.seen: set[int] = set()
        self.bytes = 0
        self.quality: int | None = None
        self.inter: bool | None = None
        self.ref_age: int | None = None

    def add(self, packet: Packet) -> None:
        """Add a parsed, compatible packet. Raises PacketError ("duplicate", "geometry", "entropy")."""
        hd = packet.header
        if hd.geometry != self.geometry:
            raise PacketError("geometry", f"latent geometry {hd.geometry} differs from the stream's {self.geometry}")
        if hd.packet_index in self.seen:
            raise PacketError("duplicate", f"duplicate packet {hd.packet_index} of frame {hd.frame_index}")
        if self.quality is not None and hd.quality != self.quality:
            raise PacketError("fields", f"packet of frame {hd.frame_index} at quality {hd.quality}, its other "
                                        f"packets at {self.quality}")
        if self.inter is not None and (hd.inter, hd.ref_age) != (self.inter, self.ref_age):
            raise PacketError("fields", f"packets of frame {hd.frame_index} disagree on its type (I or P) or "
                                        "reference")
        w, levels = hd.width, 1 << hd.bits
        decoded = []
        for e in packet.entries:
            if hd.quant_mode == MODE_LEARNED:
                decoded.append((e.channel, self._learned(e, hd)))
                continue
            if hd.quant_mode == MODE_CALIBRATED:
                table, lo, hi = self.codec.tables[e.channel], self.codec.lo[e.channel], self.codec.hi[e.channel]
                if hd.bits != self.codec.bits:
                    raise PacketError("model", f"calibrated packet with {hd.bits} bits, calibration has "
                                               f"{self.codec.bits}")
            else:
                table = entropy.parametric_table(levels, e.centre, e.table_width)
                lo, hi = torch.tensor(e.lo, dtype=torch.float32), torch.tensor(e.hi, dtype=torch.float32)
            try:
                res = entropy.decode_symbols(e.data, hd.row_count * w, table)
            except entropy.EntropyError as err:
                raise PacketError("entropy", str(err)) from None
            q = entropy.from_residuals(res.reshape(hd.row_count, w), levels)
            q = torch.from_numpy(q).reshape(1, 1, hd.row_count, w)
            decoded.append((e.channel, dequantize(q, hd.bits, lo.reshape(1), hi.reshape(1))[0, 0]))
        for ch, rows in decoded:  # commit only once the whole packet decoded
            self.z[0, ch, hd.row_start:hd.row_start + hd.row_count] = rows
            self.rows[ch, hd.row_start:hd.row_start + hd.row_count] = True
        self.seen.add(hd.packet_index)
        self.bytes += packet.size
        self.quality, self.inter, self.ref_age = hd.quality, hd.inter, hd.ref_age

    def _learned(self, e: Entry, hd: Header) -> torch.Tensor:
        learned = self.codec.for_frame(hd.inter).learned
        table = learned.tables[hd.quality][e.channel]
        try:
            sym = entropy.decode_symbols(e.data, hd.row_count * hd.width, table)
        except entropy.EntropyError as err:
            raise PacketError("entropy", str(err)) from None
        if int(sym.max(initial=0)) >= len(table):
            raise PacketError("entropy", f"symbol outside channel {e.channel}'s table")
        return learned.values(sym.reshape(hd.row_count, hd.width), hd.quality, e.channel)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(z (1,C,h,w) with lost channels zero, mask (1,C) float, 1 = every row of the channel arrived)."""
        mask = torch.from_numpy(self.rows.all(axis=1)).float()[None]
        return self.z * mask[:, :, None, None], mask


def decode_packets(packets, codec: WireCodec, geometry: tuple[int, int, int] | None = None,
                   key: bytes | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Received packets (bytes or parsed) of ONE frame -> (z (1,C,h,w), mask (1,C)); see decode_frame."""
    return decode_frame(packets, codec, geometry, key).result()


def decode_frame(packets, codec: WireCodec, geometry: tuple[int, int, int] | None = None,
                 key: bytes | None = None) -> FrameAssembly:
    """Received packets (bytes or parsed) of ONE frame -> its FrameAssembly (``result()``, ``quality``).

    Strict (offline) use: a bad, foreign or duplicate packet raises PacketError. ``geometry``
    (C,h,w) is needed only when no packet arrived (then everything is lost).
    """
    asm = None
    frame = None
    for raw in packets:
        p = raw if isinstance(raw, Packet) else parse(raw, key)
        check_compatible(p.header, codec)
        if frame is not None and p.header.frame_index != frame:
            raise PacketError("frame", f"packets of frames {frame} and {p.header.frame_index} mixed")
        frame = p.header.frame_index
        if asm is None:
            asm = FrameAssembly(codec, geometry or p.header.geometry)
        asm.add(p)
    if asm is None:
        if geometry is None:
            raise ValueError("no packets and no geometry: cannot size the all-lost latent")
        asm = FrameAssembly(codec, geometry)
    return asm
