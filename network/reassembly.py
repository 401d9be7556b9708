"""The receiver's jitter buffer: packets of one stream -> frames closed at their deadlines, in order.

Rules (all bounded; nothing here blocks or sleeps):
- One stream at a time. The first packet of a new stream id starts a stream; packets of another
  stream while it is active are "foreign"; an ended stream's id is not accepted again ("replay").
- A frame closes when all its packets arrived, at ``capture + deadline`` (receiver clock; if the
  sender's clock is off by more than ``MAX_SKEW`` s the offset seen on the first packet is
  subtracted, with a warning), when a frame ``window`` or more newer arrives, or when the stream
  ends. What has not arrived by then is lost; later packets for it are "late".
- Frames are handed out strictly in order, every index exactly once. A frame of which nothing
  arrived is handed out as ``missing`` once a later frame has closed (or the window or the stream's
  end passes it), so no frame is silently skipped.
- Open frames <= window; packets per frame <= wire.MAX_PACKETS_PER_FRAME; a frame index more than
  ``max_jump`` ahead is refused ("jump"); a stream whose frames would be larger than ``max_side``
  pixels per side is refused ("geometry"): memory and work stay bounded whatever arrives.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from codec.packetize import FrameAssembly, WireCodec, check_compatible
from codec.wire import Packet, PacketError

log = logging.getLogger(__name__)
MAX_SKEW = 5.0


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
    open: dict[int, Frame] = field(default_factory=dict)


class Reassembler:
    def __init__(self, codec: WireCodec, deadline_ms: float = 30.0, window: int = 8, max_jump: int = 3000,
                 idle_timeout: float | None = None, clock=time.time, max_side: int = 512):
        if window < 1 or max_jump < window:
            raise ValueError("need window >= 1 and max_jump >= window")
        self.codec, self.deadline = codec, deadline_ms / 1000.0
        self.max_latent_side = max(1, max_side // max(codec.stride, 1))  # bounds the decoder's memory
        self.window, self.max_jump, self.idle_timeout, self.clock = window, max_jump, idle_timeout, clock
        self.stream: Stream | None = None
        self.finished: deque[int] = deque(maxlen=64)

    # ------------------------------------------------------------ input
    def push(self, packet: Packet, now: float | None = None) -> list[Frame]:
        """Add one parsed packet; returns the frames handed out. Raises PacketError if it is dropped."""
        now = self.clock() if now is None else now
        hd = packet.header
        check_compatible(hd, self.codec)
        s = self.stream
        if s is None:
            if hd.stream_id in self.finished:
                raise PacketError("replay", f"packet of stream {hd.stream_id:08x}, which already ended")
            if hd.end:
                raise PacketError("late", f"end of stream {hd.stream_id:08x}, which was never seen")
            if max(hd.height, hd.width) > self.max_latent_side:
                raise PacketError("geometry", f"latent {hd.height}x{hd.width} is larger than this receiver "
                                              f"decodes ({self.max_latent_side} per side; see --max-size)")
            s = self._start(hd, now)
        elif hd.stream_id != s.stream_id:
            raise PacketError("foreign", f"packet of stream {hd.stream_id:08x} while {s.stream_id:08x} is active")
        s.last_packet = now
        if hd.end:
            return self.end_stream(now, frames=hd.frame_index)
        if hd.geometry != s.geometry:
            raise PacketError("geometry", f"latent geometry {hd.geometry} differs from the stream's {s.geometry}")
        idx = hd.frame_index
        if idx < s.next_emit:
            raise PacketError("late", f"packet for frame {idx}, which was already closed (late or replayed)")
        if idx >= s.next_emit + self.max_jump:
            raise PacketError("jump", f"frame {idx} is more than {self.max_jump} frames ahead of {s.next_emit}")
        frame = s.open.get(idx)
        if frame is None:
            frame = Frame(s.stream_id, idx, s.geometry, hd.capture_us, hd.packet_count,
                          hd.capture_us / 1e6 + s.offset + self.deadline, FrameAssembly(self.codec, s.geometry))
            frame.first_arrival, frame.clock_offset = now, s.offset
            s.open[idx] = frame
            s.newest = max(s.newest, idx)
            for old in s.open.values():  # the window bounds what stays open
                if old.closed_at is None and old.index <= s.newest - self.window:
                    self._close(old, now, "window")
        elif (hd.packet_count, hd.capture_us) != (frame.packet_count, frame.capture_us):
            raise PacketError("fields", f"frame {idx}: packet count or capture time differs between its packets")
        if frame.closed_at is not None:
            raise PacketError("late", f"packet for frame {idx}, which was already closed")
        t0 = time.perf_counter()
        frame.assembly.add(packet)
        frame.entropy_s += time.perf_counter() - t0
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
        for frame in s.open.values():
            if frame.closed_at is None and now >= frame.deadline:
                self._close(frame, now, "deadline")
        return self._emit()

    def end_stream(self, now: float | None = None, frames: int | None = None) -> list[Frame]:
        """The stream ended (end packet, connection closed, idle): hand out everything up to its end.

        ``frames``: the frame count the sender announced; else the newest index seen + 1.
        """
        now = self.clock() if now is None else now
        s = self.stream
        if s is None:
            return []
        total = s.newest + 1 if frames is None else min(frames, s.next_emit + self.max_jump)
        for frame in s.open.values():
            if frame.closed_at is None:
                self._close(frame, now, "end")
        out = self._emit(until=max(total, s.newest + 1))
        self.finished.append(s.stream_id)
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
    def _start(self, hd, now: float) -> Stream:
        skew = now - hd.capture_us / 1e6
        offset = 0.0
        if abs(skew) > MAX_SKEW:
            log.warning("sender clock differs from ours by %.1f s: deadlines count from first arrival", skew)
            offset = skew
        if hd.frame_index >= self.max_jump:
            log.warning("stream %08x joined at frame %d", hd.stream_id, hd.frame_index)
        s = Stream(hd.stream_id, hd.geometry, offset, last_packet=now)
        s.next_emit = hd.frame_index if hd.frame_index >= self.max_jump else 0
        self.stream = s
        log.info("stream %08x started (latent %dx%dx%d, %d bits)", hd.stream_id, *hd.geometry, hd.bits)
        return s

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
                frame = Frame(s.stream_id, j, s.geometry, reason="missing", closed_at=self.clock())
            else:
                break
            out.append(frame)
            s.next_emit += 1
        return out
