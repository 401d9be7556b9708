"""Streams the receiver has seen, remembered across restarts: the replay cache.

A small JSON file (``replay_cache.json`` in the receiver's output folder) maps stream id -> highest
frame index accepted and whether the stream ended. A packet of a remembered stream is a replay if
the stream ended or its frame is not newer than the highest one seen; so a captured stream played
back after a restart, or after many other streams, does not reopen. Bounded to ``capacity`` streams
(oldest forgotten first); with a key, the freshness window (reassembly.py) covers what was forgotten.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)
CAPACITY = 1024


class ReplayCache:
    def __init__(self, path: str | os.PathLike | None = None, capacity: int = CAPACITY):
        self.path = Path(path) if path else None
        self.capacity = capacity
        self.streams: OrderedDict[int, list] = OrderedDict()  # id -> [highest frame, ended]
        if self.path is not None and self.path.exists():
            try:
                for sid, highest, ended in json.loads(self.path.read_text())["streams"][-capacity:]:
                    self.streams[int(sid, 16)] = [int(highest), bool(ended)]
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("replay cache %s unreadable (%s): starting empty", self.path, e)

    def refuses(self, stream_id: int, frame: int) -> bool:
        """Whether a packet of ``stream_id`` for ``frame`` would reopen a stream seen before."""
        seen = self.streams.get(stream_id)
        return seen is not None and (seen[1] or frame <= seen[0])

    def update(self, stream_id: int, frame: int, ended: bool = False) -> None:
        seen = self.streams.pop(stream_id, [frame, False])
        self.streams[stream_id] = [max(seen[0], frame), seen[1] or ended]
        while len(self.streams) > self.capacity:
            self.streams.popitem(last=False)

    def save(self) -> None:
        """Write the cache (atomically: a temporary file renamed over it); failures are logged."""
        if self.path is None:
            return
        rows = [[f"{sid:08x}", h, e] for sid, (h, e) in self.streams.items()]
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"streams": rows}) + "\n")
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("cannot write replay cache %s: %s", self.path, e.strerror or e)
