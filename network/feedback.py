"""Receiver feedback of an I/P stream (playback/inter.py): which channels the receiver decoded per frame.

    reports = FeedbackReports(frames=8, key=key)            # receiver: after showing frame t
    rx.send_feedback(reports.add(stream_id, t, mask), source)

    reader = FeedbackReader(stream_id, channels, key=key)   # sender: between frames
    for index, mask in reader.take(tx.feedback()):
        encoder.ack(index, mask)

Each feedback packet (codec/wire.py) carries the masks of the receiver's last ``frames`` frames, so a lost
packet is covered by the next one. The sender counts and ignores bad or foreign feedback (``dropped``,
by reason, each drop also handed to ``on_drop``, e.g. playback.output.DropLog.note); it is never fatal.
"""

from __future__ import annotations

from collections import Counter, deque

import torch

from codec.wire import PacketError, feedback_capacity, pack_feedback, parse_feedback


class FeedbackReports:
    """The receiver's side: the masks of its last ``frames`` shown frames of the current stream."""

    def __init__(self, frames: int = 8, key: bytes | None = None):
        if frames < 1:
            raise ValueError(f"feedback must report at least 1 frame, got {frames}")
        self.frames, self.key = frames, key
        self.stream_id: int | None = None
        self.recent: deque[tuple[int, torch.Tensor]] = deque()
        self.sent = 0

    def add(self, stream_id: int, index: int, mask: torch.Tensor) -> bytes:
        """Frame ``index`` of ``stream_id`` was shown with ``mask`` (1,C): the feedback packet to send now."""
        if stream_id != self.stream_id:
            self.stream_id = stream_id
            self.recent.clear()
        self.recent.append((index, mask.detach().reshape(1, -1).cpu()))
        keep = max(1, min(self.frames, feedback_capacity(mask.numel(), tagged=self.key is not None)))
        while len(self.recent) > keep:
            self.recent.popleft()
        self.sent += 1
        return pack_feedback(stream_id, self.recent, self.key)


class FeedbackReader:
    """The sender's side: parses feedback packets of stream ``stream_id`` with ``channels``-channel masks.
    ``received``: good packets; ``dropped``: bad and foreign ones by reason (each also passed to ``on_drop``);
    ``latest``: the newest frame reported."""

    def __init__(self, stream_id: int, channels: int, key: bytes | None = None, on_drop=None):
        self.stream_id, self.channels, self.key, self.on_drop = stream_id, channels, key, on_drop
        self.dropped: Counter = Counter()
        self.received = 0
        self.latest = -1

    def take(self, packets) -> list[tuple[int, torch.Tensor]]:
        """Raw feedback packets -> their (frame_index, mask (1,C)) reports, oldest first."""
        out = []
        for data in packets:
            try:
                fb = parse_feedback(data, self.key)
                if fb.stream_id != self.stream_id:
                    raise PacketError("foreign", f"feedback about stream {fb.stream_id:08x}, "
                                                 f"this sender streams {self.stream_id:08x}")
                if fb.channels != self.channels:
                    raise PacketError("geometry", f"feedback masks of {fb.channels} channels, "
                                                  f"the stream has {self.channels}")
            except PacketError as e:
                self.dropped[e.reason] += 1
                if self.on_drop is not None:
                    self.on_drop(e)
                continue
            self.received += 1
            self.latest = max(self.latest, fb.reports[-1][0])
            out.extend(fb.reports)
        return out
