"""Rate control for a codec with quality levels: pick each frame's level to hold a target bitrate.

A **leaky bucket with proportional pay-back** on the coded size (bytes the sender puts on the wire for
a frame, headers included)::

    budget   B = kbps * 1000 / 8 / fps                       bytes per frame
    fullness F_n = F_(n-1) + size_n - B, never below -credit*B   (bytes sent beyond the budget so far)
    target   T = B - F / horizon                             bytes the next frame may take
    level    q = the level whose expected size is nearest T

F is the integral of the rate error and T adds it back over ``horizon`` frames, so this is a PI
controller on the coded size with the discrete levels as actuator: when B falls between two levels
the bucket alternates between them in the ratio that makes the mean come out at B, and since
sum(size) = n*B + F_n with F bounded (within about ``horizon`` times half the gap between neighbouring
levels of 0: the nearest level, not the highest below T, so F does not settle below 0), the achieved
rate converges to the target as 1/n. Unused budget is banked only up to ``credit``
frames (a quiet scene does not buy a long burst later); debt is always paid back.

Expected sizes: the first frame is coded at every level (:meth:`RateController.start`), which gives
the ladder of sizes per level; after each frame the whole ladder is scaled by the ratio of the
frame's coded size to what its level was expected to cost (smoothed by ``alpha`` in the log domain),
so a scene that gets busier makes every level more expensive at once.
"""

from __future__ import annotations

import math


class RateController:
    """``choose() -> level``; ``update(level, size)`` after coding; ``start(sizes)`` with frame 0's size at
    every level. Pure arithmetic, no clock: the same sizes give the same levels."""

    def __init__(self, kbps: float, fps: float, levels: int, horizon: float = 4.0, credit: float = 2.0,
                 alpha: float = 0.5):
        if not (kbps > 0 and fps > 0 and math.isfinite(kbps) and math.isfinite(fps)):
            raise ValueError(f"rate control needs a positive target and frame rate, got {kbps} kbit/s at {fps} fps")
        if levels < 2:
            raise ValueError("rate control needs a model with several quality levels")
        self.budget = kbps * 1000.0 / 8.0 / fps
        self.levels, self.horizon, self.credit, self.alpha = levels, horizon, credit, alpha
        self.fullness = 0.0
        self.expected: list[float] | None = None

    def start(self, sizes: list[float]) -> None:
        """Frame 0's coded size at every level (bytes, one per level): the initial size ladder."""
        if len(sizes) != self.levels or min(sizes) <= 0:
            raise ValueError(f"need {self.levels} positive sizes, got {sizes}")
        self.expected = [float(s) for s in sizes]

    def choose(self) -> int:
        if self.expected is None:
            raise RuntimeError("start() first, with the first frame's size at every level")
        target = self.budget - self.fullness / self.horizon
        return min(range(self.levels), key=lambda q: (abs(self.expected[q] - target), q))

    def update(self, level: int, size: float) -> None:
        """Frame coded at ``level`` took ``size`` bytes."""
        self.fullness = max(self.fullness + size - self.budget, -self.credit * self.budget)
        ratio = (max(size, 1.0) / self.expected[level]) ** self.alpha
        self.expected = [s * ratio for s in self.expected]
