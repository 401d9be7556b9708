"""Seeded synthetic clips whose MOTION is the class ("synthetic" spec).

Eight classes (label = index): move_left, move_right, move_up, move_down, rotate_cw, rotate_ccw,
grow, shrink. Each clip shows one textured shape (an ellipse or a rectangle with coloured stripes)
over a seeded background: smooth colour noise, a fine texture, a few static clutter rectangles, plus
faint per-frame luma noise. Only the class's motion changes over time; everything else (colours,
shape, start pose, speed within a range) is drawn per clip, independently of the class.

Single-frame cue (deliberate): the shape carries a time-coded ghost trail (an "onion skin", like a
motion-history image) of its ``GHOSTS`` previous poses: every pixel those poses cover is blended at
``TRAIL`` opacity towards the mean grey shade of the poses covering it, from near black (oldest) to
near white (newest). The shades are the same for every class; only the motion decides where they
fall, so one frame shows it: dark-to-bright along the direction of travel (move), a fan shaded
round the turn (rotate), a bright rim around a grey core (grow) or a dark halo around it (shrink).
With a fainter cue (two ghosts at 25/45 % opacity, 6 clips per class) a frame CNN learnt each
training video's colours instead of the motion (train accuracy 1.0, test at chance). A mirror image
reverses the cue (move_left <-> move_right, rotate_cw <-> rotate_ccw), so these videos are not
flip-invariant (``SyntheticVideo.flip_invariant = False``) and the training datasets do not mirror
them (data/datasets.py).

Spec: "synthetic" = 16 clips per class of 12 frames; "synthetic:V,T" = V clips per class of T frames.
Frames are square, ``size`` x ``size``, generated lazily and cached (about 10 ms per 12-frame clip at
224 on one core); the same seed gives the same pixels. Names: "synthetic/<class>_<k>". There is no
fixed split: split_videos stratifies by class.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F

from .core import CACHE, DataError, Video, VideoSet, single_thread

CLASSES = ["move_left", "move_right", "move_up", "move_down", "rotate_cw", "rotate_ccw", "grow", "shrink"]
DEFAULT_PER_CLASS = 16
DEFAULT_FRAMES = 12
GHOSTS = 6  # previous poses in the trail
TRAIL = 0.75  # opacity of the trail


def parse_spec(spec: str) -> tuple[int, int]:
    """"synthetic" or "synthetic:V,T" -> (clips per class, frames per clip)."""
    if spec == "synthetic":
        return DEFAULT_PER_CLASS, DEFAULT_FRAMES
    try:
        per_class, frames = (int(v) for v in spec.split(":", 1)[1].split(","))
    except ValueError:
        raise DataError(f"bad synthetic spec {spec!r}; use 'synthetic' or 'synthetic:V,T' "
                        "(V clips per class, T frames)") from None
    if per_class < 1 or frames < 1:
        raise DataError(f"bad synthetic spec {spec!r}: V and T must be >= 1")
    return per_class, frames


def _uniform(g: torch.Generator, lo: float, hi: float, n: int = 1) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _background(g: torch.Generator, size: int) -> torch.Tensor:
    """(3,S,S) float in [0,1]: smooth colour noise + fine texture + static clutter rectangles."""
    base = F.interpolate(torch.rand(1, 3, 5, 5, generator=g), size=(size, size), mode="bilinear",
                         align_corners=False)[0]
    fine_side = max(2, size // 6)
    fine = F.interpolate(torch.rand(1, 1, fine_side, fine_side, generator=g), size=(size, size),
                         mode="bilinear", align_corners=False)[0]
    bg = 0.2 + 0.5 * base + 0.25 * (fine - 0.5)
    for _ in range(int(torch.randint(3, 7, (1,), generator=g))):
        x0, y0 = (int(v) for v in torch.randint(0, size, (2,), generator=g))
        w, h = (max(1, int(v * size)) for v in _uniform(g, 0.05, 0.2, 2))
        bg[:, y0:y0 + h, x0:x0 + w] = torch.rand(3, 1, 1, generator=g)
    return bg.clamp(0, 1)


def _poses(cls: str, g: torch.Generator, size: int, steps: int) -> tuple[torch.Tensor, ...]:
    """Centre x, centre y, angle, scale (pixels) for ``steps`` consecutive poses."""
    t = torch.arange(steps, dtype=torch.float32)
    cx = torch.full((steps,), float(_uniform(g, 0.35, 0.65)) * size)
    cy = torch.full((steps,), float(_uniform(g, 0.35, 0.65)) * size)
    angle = torch.full((steps,), float(_uniform(g, 0, math.pi)))
    scale = torch.full((steps,), float(_uniform(g, 0.13, 0.2)) * size)
    # pixels per frame: the trail is ~0.2 of the frame long; long clips slow down to stay in frame
    travel = min(float(_uniform(g, 0.03, 0.038)), 0.75 / max(steps - 1, 1)) * size
    if cls.startswith("move"):
        sign = -1.0 if cls in ("move_left", "move_up") else 1.0
        along = size / 2 - sign * travel * (steps - 1) / 2 + sign * travel * t
        if cls in ("move_left", "move_right"):
            cx = along
        else:
            cy = along
    elif cls.startswith("rotate"):
        omega = float(_uniform(g, 0.16, 0.24)) * (1.0 if cls == "rotate_cw" else -1.0)  # y points down
        angle = angle + omega * t
    else:
        small, big = float(_uniform(g, 0.06, 0.08)) * size, float(_uniform(g, 0.28, 0.34)) * size
        frac = t / max(steps - 1, 1)
        if cls == "shrink":
            frac = 1 - frac
        scale = small * (big / small) ** frac
    return cx, cy, angle, scale


def clip_generator(seed: int, label: int, index: int) -> torch.Generator:
    """The generator of clip ``index`` of class ``label``; its first draws make the background."""
    return torch.Generator().manual_seed((seed * 1_000_003 + label) * 1_000_003 + index)


def render(seed: int, label: int, index: int, size: int, frames: int) -> torch.Tensor:
    """uint8 (frames,3,size,size) clip number ``index`` of class ``label`` for ``seed``."""
    g = clip_generator(seed, label, index)
    bg = _background(g, size)
    steps = frames + GHOSTS
    cx, cy, angle, scale = _poses(CLASSES[label], g, size, steps)
    aspect = float(_uniform(g, 0.35, 0.6))
    rectangle = bool(torch.rand(1, generator=g) < 0.5)
    stripes = float(_uniform(g, 2.0, 4.0)) * math.pi
    phase = float(_uniform(g, 0, 2 * math.pi))
    colours = torch.rand(2, 1, 3, 1, 1, generator=g)

    # Everything the shape touches lies in one box; only that box is rendered and composited.
    reach = scale.max().item() * math.sqrt(1 + aspect * aspect) + 2
    x0, x1 = (max(0, min(size, int(f(v)))) for f, v in ((math.floor, cx.min().item() - reach),
                                                         (math.ceil, cx.max().item() + reach)))
    y0, y1 = (max(0, min(size, int(f(v)))) for f, v in ((math.floor, cy.min().item() - reach),
                                                         (math.ceil, cy.max().item() + reach)))
    out = bg.expand(frames, 3, size, size).clone()
    if x1 > x0 and y1 > y0:
        dx = torch.arange(x0, x1, dtype=torch.float32).add_(0.5).view(1, 1, -1) - cx.view(-1, 1, 1)
        dy = torch.arange(y0, y1, dtype=torch.float32).add_(0.5).view(1, -1, 1) - cy.view(-1, 1, 1)
        cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
        s = scale.view(-1, 1, 1)
        u = (dx * cos + dy * sin) / s
        v = (dy * cos - dx * sin) / (s * aspect)
        r = torch.maximum(u.abs(), v.abs()) if rectangle else torch.sqrt(u * u + v * v)
        alpha = ((1 - r) * s * aspect / 1.5).clamp(0, 1).unsqueeze(1)  # (steps,1,h,w), ~1.5 px soft edge
        now = slice(GHOSTS, GHOSTS + frames)
        tex = (0.5 + 0.5 * torch.sin(stripes * u[now] + phase)).unsqueeze(1)
        fg = colours[0] + (colours[1] - colours[0]) * tex  # (frames,3,h,w)
        box = out[:, :, y0:y1, x0:x1]
        box += alpha[now] * (fg - box)
        # time code: each covered pixel takes the mean shade of the ghosts that cover it (oldest
        # 0.05, newest 0.95), so neither the oldest nor the newest hides the others (grow, shrink)
        shades = torch.linspace(0.05, 0.95, GHOSTS).view(-1, 1, 1, 1)
        cover = sum(alpha[k:k + frames] for k in range(GHOSTS))
        shade = sum(alpha[k:k + frames] * shades[k] for k in range(GHOSTS)) / cover.clamp(min=1e-6)
        box += TRAIL * cover.clamp(max=1) * (shade - box)
    out += (torch.rand(frames, 1, size, size, generator=g) - 0.5) * 0.06  # faint luma noise
    return out.mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


class SyntheticVideo(Video):
    """A synthetic clip. Its class is a direction of motion, so its mirror image shows another class:
    the training datasets never flip it (see data.datasets.flip_invariant)."""

    flip_invariant = False


def synthetic_frames(seed: int, label: int, index: int, size: int, frames: int) -> torch.Tensor:
    """Cached :func:`render`."""
    key = ("synthetic", seed, label, index, size, frames)
    def make() -> torch.Tensor:
        with single_thread():
            return render(seed, label, index, size, frames)

    return CACHE.get(key, make)


def load_synthetic(spec: str = "synthetic", size: int = 224, seed: int = 0,
                   max_frames: int | None = None) -> VideoSet:
    """The labelled synthetic set (frames generated on demand)."""
    per_class, frames = parse_spec(spec)
    if max_frames is not None:
        frames = min(frames, max_frames)
    videos = [SyntheticVideo(f"synthetic/{name}_{k}", label, frames,
                             partial(synthetic_frames, seed, label, k, size, frames))
              for label, name in enumerate(CLASSES) for k in range(per_class)]
    return VideoSet(videos, list(CLASSES), None)
