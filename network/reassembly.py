"""The receiver's jitter buffer: packets of one stream -> frames closed at their deadlines, in order.

Rules (all bounded; nothing here blocks or sleeps):
- One stream at a time. The first packet of a new stream id starts a stream; packets of another
  stream while it is active are "foreign" - unless, in two ``TAKEOVER_S`` periods in a row, one
  foreign stream sent more than twice the active one's valid packets (and at least ``MIN_TAKEOVER``):
  then the active stream ends (its later frames may come back the same way) and the busier one may
  start, so a few forged packets cannot lock a real UDP stream out. A
  stream the replay cache (network/replay.py) remembers as ended, or a frame not newer than the
  highest it accepted of that stream, is refused ("replay").
- Freshness (``max_age``, set when packets are authenticated): a stream's first packet must be at
  most ``MAX_SKEW + max_age`` s old by our clock, every later one at most ``max_age`` s older than
  the first packet's age (the measured skew); older packets are "stale".
- A frame closes when all its packets arrived, at ``capture + deadline`` (receiver clock; if the
  sender's clock is off by more than ``MAX_SKEW`` s the offset seen on the first packet is
  subtracted, with a warning), when a frame ``window`` or more newer arrives, or when the stream
  ends. What has not arrived by then is lost; later packets for it are "late".
- Frames are handed out strictly in order, each index at most once. A frame of which nothing
  arrived is handed out as ``missing`` once a later frame has closed (or the window or the stream's
  end passes it) - but a run of missing frames longer than ``max_gap``, or than the stream's budget
  (frames with data + ``max_gap`` - missing frames already handed out), is skipped with a warning and
  counted in ``skipped``: a few forged packets cannot make the receiver write thousands of frames.
- Open frames <= window; packets per frame <= wire.MAX_PACKETS_PER_FRAME; a frame index more than
  ``max_jump`` ahead of the newest frame is refused ("jump"); a stream whose frames would be larger
  than ``max_side`` pixels per side is refused ("geometry"); a packet whose entries do not decode
  leaves no trace (no frame, no stream): memory and work stay bounded whatever arrives.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from codec.packetize import FrameAssembly, WireCodec, check_compatible
from codec.wire import Packet, PacketError
from network.replay import ReplayCache

log = logging.getLogger(__name__)
MAX_SKEW = 5.0
TAKEOVER_S = 1.0
MIN_TAKEOVER = 32
MAX_FOREIGN_IDS = 64


@dataclass
class Frame:
    stream_id: int
    index: int
    geometry: tuple[int, int, int]
    capture_us: int | None = None
    packet_count: int = 0
    deadline: float = float("inf")
    assembly: FrameAssembly | None = None
    first_arrival: float | None = None
    last_arrival: float | None = None
    closed_at: float | None = None
    reason: str = ""  # complete, deadline, window, end, missing
    entropy_s: float = 0.0
    clock_offset: float = 0.0  # add to capture_us / 1e6 to get receiver time
    received: list[int] = field(default_factory=list)

    @property
    def capture(self) -> float | None:
        """Capture time on the receiver's clock (s), or None for a frame of which nothing arrived."""
        return None if self.capture_us is None else self.capture_us / 1e6 + self.clock_offset

    @property
    def bytes(self) -> int:
        return self.assembly.bytes if self.assembly else 0


@dataclass
class Stream:
    stream_id: int
    geometry: tuple[int, int, int]
    offset: float
    next_emit: int = 0
    newest: int = -1
    last_packet: float = 0.0
    skew: float = 0.0  # receiver minus sender clock, measured on the first packet (s)
    recent: int = 0  # valid packets in the current takeover period
    delivered: int = 0  # frames with data handed out
    missing: int = 0  # frames of which nothing arrived handed out
    skipped: int = 0  # frames of over-long gaps never handed out
    open: dict[int, Frame] = field(default_factory=dict)


class Reassembler:
    def __init__(self, codec: WireCodec, deadline_ms: float = 30.0, window: int = 8, max_jump: int = 300,
                 idle_timeout: float | None = None, clock=time.time, max_side: int = 512, max_gap: int = 30,
                 max_age: float | None = None, replay: ReplayCache | None = None):
        if window < 1 or max_jump < window or max_gap < 0:
            raise ValueError("need window >= 1, max_jump >= window and max_gap >= 0")
        self.codec, self.deadline = codec, deadline_ms / 1000.0
        self.max_latent_side = max(1, max_side // max(codec.stride, 1))  # bounds the decoder's memory
        self.window, self.max_jump, self.idle_timeout, self.clock = window, max_jump, idle_timeout, clock
        self.max_gap, self.max_age = max_gap, max_age
        self.replay = replay if replay is not None else ReplayCache()
        self.stream: Stream | None = None
        self.started = 0  # streams started so far
        self.skipped = 0  # frames of over-long gaps skipped, over all ended streams
        self.foreign: Counter = Counter()  # valid packets per other stream id in this takeover period
        self.period, self.rival = None, None

    # ------------------------------------------------------------ input
    def push(self, packet: Packet, now: float | None = None) -> list[Frame]:
        """Add one parsed packet; returns the frames handed out. Raises PacketError if it is dropped."""
        now = self.clock() if now is None else now
        hd = packet.header
        check_compatible(hd, self.codec)
        s = self.stream
        if s is None:
            s = self._new_stream(hd, now)
        elif hd.stream_id != s.stream_id:
            if len(self.foreign) >= MAX_FOREIGN_IDS and hd.stream_id not in self.foreign:
                self.foreign.clear()
            self.foreign[hd.stream_id] += 1
            raise PacketError("foreign", f"packet of stream {hd.stream_id:08x} while {s.stream_id:08x} is active")
        age = now - hd.capture_us / 1e6
        if self.max_age is not None and age - max(s.skew, 0.0) > self.max_age:
            raise PacketError("stale", f"packet captured {age:.1f} s ago (skew {s.skew:.1f} s, "
                                       f"window {self.max_age:g} s): replayed or delayed")
        if hd.end:
            s.last_packet = now
            return self.end_stream(now, frames=hd.frame_index)
        if hd.geometry != s.geometry:
            raise PacketError("geometry", f"latent geometry {hd.geometry} differs from the stream's {s.geometry}")
        idx = hd.frame_index
        if idx < s.next_emit:
            raise PacketError("late", f"packet for frame {idx}, which was already closed (late or replayed)")
        if idx > max(s.newest, s.next_emit) + self.max_jump:
            raise PacketError("jump", f"frame {idx} is more than {self.max_jump} frames ahead of "
                                      f"{max(s.newest, s.next_emit)}")
        frame = s.open.get(idx)
        if frame is None:
            frame = Frame(s.stream_id, idx, s.geometry, hd.capture_us, hd.packet_count,
                          hd.capture_us / 1e6 + s.offset + self.deadline, FrameAssembly(self.codec, s.geometry))
            frame.first_arrival, frame.clock_offset = now, s.offset
        elif (hd.packet_count, hd.capture_us) != (frame.packet_count, frame.capture_us):
            raise PacketError("fields", f"frame {idx}: packet count or capture time differs between its packets")
        if frame.closed_at is not None:
            raise PacketError("late", f"packet for frame {idx}, which was already closed")
        t0 = time.perf_counter()
        frame.assembly.add(packet)  # may raise: then neither the frame nor a new stream is kept
        frame.entropy_s += time.perf_counter() - t0
        started = s is not self.stream
        if started:
            self._commit(s)
        s.last_packet, s.recent = now, s.recent + 1
        self.replay.update(s.stream_id, idx)
        if started:
            self.replay.save()
        if idx not in s.open:
            s.open[idx] = frame
            s.newest = max(s.newest, idx)
            for old in s.open.values():  # the window bounds what stays open
                if old.closed_at is None and old.index <= s.newest - self.window:
                    self._close(old, now, "window")
        frame.received.append(hd.packet_index)
        frame.last_arrival = now
        if len(frame.received) == frame.packet_count:
            self._close(frame, now, "complete")
        return self._emit()

    def tick(self, now: float | None = None) -> list[Frame]:
        """Close frames whose deadline passed (and an idle stream); returns the frames handed out."""
        now = self.clock() if now is None else now
        s = self.stream
        if s is None:
            return []
        if self.idle_timeout is not None and now - s.last_packet >= self.idle_timeout:
            log.info("stream %08x idle for %.1f s: closing it", s.stream_id, self.idle_timeout)
            return self.end_stream(now)
        if self.period is None or now - self.period >= TAKEOVER_S:
            rival, count = self.foreign.most_common(1)[0] if self.foreign else (None, 0)
            active, self.period, s.recent = s.recent, now, 0
            self.foreign.clear()
            busier = count >= max(2 * active + 1, MIN_TAKEOVER)
            if busier and rival == self.rival:  # two periods in a row: not a burst or a stall
                log.warning("stream %08x sent %d packets in %.0f s, the active %08x %d: ending %08x",
                            rival, count, TAKEOVER_S, s.stream_id, active, s.stream_id)
                return self.end_stream(now, ended=False)
            self.rival = rival if busier else None
        for frame in s.open.values():
            if frame.closed_at is None and now >= frame.deadline:
                self._close(frame, now, "deadline")
        return self._emit()

    def end_stream(self, now: float | None = None, frames: int | None = None, ended: bool = True) -> list[Frame]:
        """The stream ended (end packet, connection closed, idle): hand out everything up to its end.

        ``frames``: the frame count the sender announced; else the newest index seen + 1. ``ended=False``
        (taken over by a busier stream): its later frames may still come back.
        """
        now = self.clock() if now is None else now
        s = self.stream
        if s is None:
            return []
        total = s.newest + 1 if frames is None else min(frames, s.newest + 1 + self.max_jump)
        for frame in s.open.values():
            if frame.closed_at is None:
                self._close(frame, now, "end")
        out = self._emit(until=max(total, s.newest + 1))
        self.replay.update(s.stream_id, s.newest, ended=ended)
        self.replay.save()
        self.skipped += s.skipped
        if s.skipped:
            log.warning("stream %08x: %d frames of over-long gaps were skipped, not concealed",
                        s.stream_id, s.skipped)
        self.stream = None
        return out

    def next_timeout(self, now: float | None = None) -> float | None:
        """Seconds until something must be closed (None: nothing pending)."""
        now = self.clock() if now is None else now
        s = self.stream
        if s is None:
            return None
        times = [f.deadline for f in s.open.values() if f.closed_at is None]
        if self.idle_timeout is not None:
            times.append(s.last_packet + self.idle_timeout)
        return max(0.0, min(times) - now) if times else None

    # ------------------------------------------------------------ internals
    def _new_stream(self, hd, now: float) -> Stream:
        """A candidate stream for a packet that arrives while none is active (kept by ``_commit`` only
        once a packet of it was accepted)."""
        if self.replay.refuses(hd.stream_id, hd.frame_index):
            raise PacketError("replay", f"packet of stream {hd.stream_id:08x}, which was seen before")
        if hd.end:
            raise PacketError("late", f"end of stream {hd.stream_id:08x}, which was never seen")
        if max(hd.height, hd.width) > self.max_latent_side:
            raise PacketError("geometry", f"latent {hd.height}x{hd.width} is larger than this receiver "
                                          f"decodes ({self.max_latent_side} per side; see --max-size)")
        skew = now - hd.capture_us / 1e6
        if self.max_age is not None and skew > MAX_SKEW + self.max_age:
            raise PacketError("stale", f"first packet of stream {hd.stream_id:08x} captured {skew:.1f} s ago "
                                       f"(allowed {MAX_SKEW + self.max_age:g} s): replayed or delayed")
        offset = skew if abs(skew) > MAX_SKEW else 0.0
        s = Stream(hd.stream_id, hd.geometry, offset, last_packet=now, skew=skew)
        s.next_emit = hd.frame_index if hd.frame_index > self.max_gap else 0
        return s

    def _commit(self, s: Stream) -> None:
        if abs(s.skew) > MAX_SKEW:
            log.warning("sender clock differs from ours by %.1f s: deadlines count from first arrival", s.skew)
        if s.next_emit:
            log.warning("stream %08x joined at frame %d", s.stream_id, s.next_emit)
        self.stream, self.started, self.period = s, self.started + 1, None
        log.info("stream %08x started (latent %dx%dx%d)", s.stream_id, *s.geometry)

    @staticmethod
    def _close(frame: Frame, now: float, reason: str) -> None:
        frame.closed_at, frame.reason = now, reason

    def _emit(self, until: int | None = None) -> list[Frame]:
        s, out = self.stream, []
        while True:
            j = s.next_emit
            frame = s.open.get(j)
            if frame is not None:
                if frame.closed_at is None:
                    break
                del s.open[j]
            elif ((until is not None and j < until) or j <= s.newest - self.window
                  or any(k > j and f.closed_at is not None for k, f in s.open.items())):
                stop = min([k for k in s.open if k > j] + [max(until or 0, s.newest + 1)])
                if stop - j > min(self.max_gap, s.delivered + self.max_gap - s.missing):
                    log.warning("stream %08x: skipping frames %d..%d (nothing arrived; longer than the "
                                "gap a stream may conceal)", s.stream_id, j, stop - 1)
                    s.skipped += stop - j
                    s.next_emit = stop
                    continue
                frame = Frame(s.stream_id, j, s.geometry, reason="missing", closed_at=self.clock())
                s.missing += 1
            else:
                break
            s.delivered += frame.assembly is not None
            out.append(frame)
            s.next_emit += 1
        return out
