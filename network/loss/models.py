"""Network loss models over packet slots: the registry, presets, traces and the one seeding rule.

Network loss models (``--loss`` of sender_encode.py and evaluate.py) live in the registry
``LOSS_MODELS``: one class per model, registered with :func:`register`; presets are specs in
``PRESETS``. Adding a loss model is one entry here. :func:`parse_loss` turns a spec into a model:

- ``none``; ``random:P`` (alias ``iid:P``): each slot lost with probability P;
- ``ge:P,L`` (alias ``burst:P,L``): Gilbert-Elliott, mean loss P, mean burst length L packets;
- ``tail:K``: the last K packets of every frame are lost (a deadline, no randomness);
- ``grace:P,N``: GRACE's grid: i.i.d. loss P on runs of N consecutive frames, each run after
  ``GRACE_GAP`` clean frames (the first frames are clean); the other frames arrive whole;
- ``trace:FILE[,K]``: a recorded pattern replayed in order, wrapping (see :class:`TraceLoss`);
- presets ``wifi``, ``cellular``, ``lossy-wifi``, ``congested`` (Gilbert-Elliott, see ``PRESETS``).

The seeding rule (:func:`frame_slots`), shared by the sender's emulator and evaluate.py: a frame's
packets occupy slots 0, 1, ... of its row; row f is drawn from a fresh generator seeded by
:func:`frame_seed` (seed, f), and a frame with k packets sees the first k slots of that row (draws are
prefix-stable: the k-slot row is the first k slots of any longer one, pinned by a test). So a live
sender draws frame f alone, evaluate's (n_frames, slots) matrix row f is the same row, and every
method of an evaluation sees the same loss at slot j of frame f. The Gilbert-Elliott chain restarts
per frame from its stationary distribution: row f depends on (seed, f) only, not on how many slots
earlier frames used (methods send different packet counts), at the price that bursts never cross a
frame boundary.
"""

from __future__ import annotations

from pathlib import Path

import torch

from network.loss.masks import DEFAULT_BURST_LEN, check_mode, ge_chain, tail_mask

GRACE_GAP = 3  # clean frames before each lossy run of grace:P,N (evaluation/temporal.py's GAP)
TRACE_SLOTS = 16  # trace slots per frame row by default (LRAE_VC's 16 packets per frame)
TRACE_DIR = Path(__file__).resolve().parents[1] / "traces"  # shipped traces: trace:NAME reads NAME.txt here


def frame_seed(seed: int, frame: int) -> int:
    """The generator seed of row ``frame`` for base ``seed``.

    torch's CPU generator keeps only the low 32 bits of a seed, so (seed, frame) is folded into
    32 bits as seed·0x9E3779B9 + frame (mod 2**32): distinct frames of one seed never collide, and
    two seeds less than 1000 apart only collide millions of frames apart.
    """
    return (int(seed) * 0x9E3779B9 + int(frame)) % 2**32


LOSS_MODELS: dict[str, type[LossModel]] = {}


def register(*names: str):
    """Class decorator: ``@register("ge", "burst")`` makes the model parseable by these spec names."""
    def wrap(cls):
        for name in names:
            if name in LOSS_MODELS:
                raise ValueError(f"loss model {name!r} registered twice")
            LOSS_MODELS[name] = cls
        cls.name = names[0]
        return cls
    return wrap


class LossModel:
    """A packet loss model. ``row`` is its draw for one frame; ``rate`` its nominal mean loss.

    Subclasses implement ``parse(arg)`` (the text after ``name:``), ``row`` and ``spec``; those that
    evaluate.py can sweep over ``--rates`` implement ``at_rate``.
    """

    name = ""
    rate = 0.0

    @classmethod
    def parse(cls, arg: str) -> LossModel:
        raise NotImplementedError

    @classmethod
    def at_rate(cls, rate: float, burst_len: float = DEFAULT_BURST_LEN) -> LossModel:
        raise ValueError(f"loss model {cls.name!r} has no rate to sweep; give a full spec")

    def row(self, generator: torch.Generator, slots: int, frame: int) -> torch.Tensor:
        """(slots,) float, 1 = delivered; the first k slots must not depend on ``slots`` (prefix-stable)."""
        raise NotImplementedError

    def spec(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<loss {self.spec()}>"


def _floats(arg: str, n: int, defaults: tuple = ()) -> list[float]:
    """``n`` comma-separated numbers of which the last ``len(defaults)`` may be left out."""
    parts = arg.split(",") if arg else []
    if not n - len(defaults) <= len(parts) <= n:
        raise ValueError(f"expected {n - len(defaults)} to {n} comma-separated numbers")
    values = [float(p) for p in parts]
    return values + list(defaults[len(values) - (n - len(defaults)):])


@register("none")
class NoLoss(LossModel):
    @classmethod
    def parse(cls, arg):
        if arg:
            raise ValueError("none takes no arguments")
        return cls()

    @classmethod
    def at_rate(cls, rate, burst_len=DEFAULT_BURST_LEN):
        return cls()

    def row(self, generator, slots, frame):
        return torch.ones(slots)

    def spec(self):
        return "none"


@register("random", "iid")
class RandomLoss(LossModel):
    def __init__(self, rate: float):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"loss rate must be in [0, 1], got {rate}")
        self.rate = float(rate)

    @classmethod
    def parse(cls, arg):
        return cls(*_floats(arg, 1))

    @classmethod
    def at_rate(cls, rate, burst_len=DEFAULT_BURST_LEN):
        return cls(rate)

    def row(self, generator, slots, frame):
        return (torch.rand(slots, generator=generator, dtype=torch.float64) >= self.rate).float()

    def spec(self):
        return f"random:{self.rate:g}"


@register("ge", "burst")
class GilbertElliott(LossModel):
    """Two-state Markov loss (Gilbert 1960, Elliott 1963): mean loss ``rate``, mean burst ``burst_len``."""

    def __init__(self, rate: float, burst_len: float = DEFAULT_BURST_LEN):
        if not (0.0 <= rate < 1.0 and burst_len >= 1.0):
            raise ValueError(f"need 0 <= P < 1 and L >= 1, got {rate}, {burst_len}")
        self.rate, self.burst_len = float(rate), float(burst_len)

    @classmethod
    def parse(cls, arg):
        return cls(*_floats(arg, 2, (DEFAULT_BURST_LEN,)))

    @classmethod
    def at_rate(cls, rate, burst_len=DEFAULT_BURST_LEN):
        return cls(rate, burst_len)

    def row(self, generator, slots, frame):
        u = torch.rand(1, slots, generator=generator, dtype=torch.float64)
        return (~ge_chain(u, torch.tensor([self.rate]), self.burst_len)[0]).float()

    def spec(self):
        return f"ge:{self.rate:g},{self.burst_len:g}"


@register("tail")
class TailLoss(LossModel):
    """The last ``lost`` of a frame's ``slots`` packets are lost (nothing random)."""

    def __init__(self, lost: int):
        if lost < 0:
            raise ValueError(f"tail needs K >= 0, got {lost}")
        self.lost = int(lost)

    @classmethod
    def parse(cls, arg):
        return cls(int(arg))

    def row(self, generator, slots, frame):
        return tail_mask(1, slots, min(self.lost, slots))[0]

    def spec(self):
        return f"tail:{self.lost}"


def consecutive_lossy(frame: int, n: int, gap: int = GRACE_GAP, start: int | None = None) -> bool:
    """Whether ``frame`` lies in a lossy run: clean x gap, lossy x n, clean x gap, lossy x n, ...
    (``start``: the first lossy frame, default ``gap``)."""
    t = frame - (gap if start is None else start)
    return t >= 0 and t % (n + gap) < n


@register("grace")
class GraceLoss(LossModel):
    """GRACE (NSDI 2024) grid: i.i.d. loss ``rate`` on runs of ``frames`` consecutive frames (1, 3, 5)."""

    def __init__(self, rate: float, frames: int = 1):
        if frames < 1:
            raise ValueError(f"grace needs N >= 1 lossy frames, got {frames}")
        self.iid, self.frames, self.rate = RandomLoss(rate), int(frames), float(rate)

    @classmethod
    def parse(cls, arg):
        p, n = _floats(arg, 2, (1,))
        if n != int(n):
            raise ValueError("N must be an integer")
        return cls(p, int(n))

    def row(self, generator, slots, frame):
        if consecutive_lossy(frame, self.frames):
            return self.iid.row(generator, slots, frame)
        return torch.ones(slots)

    def spec(self):
        return f"grace:{self.rate:g},{self.frames}"


@register("trace")
class TraceLoss(LossModel):
    """A recorded loss pattern: one character per packet slot, ``1`` or ``.`` = delivered, ``0`` or ``X``
    = lost; whitespace and lines starting with ``#`` are ignored. Row f starts at trace position
    f·K (K = ``slots_per_frame``, default 16) and slot j reads position f·K + j, wrapping at the end."""

    def __init__(self, path: str, slots_per_frame: int = TRACE_SLOTS):
        self.path, self.slots_per_frame = str(path), int(slots_per_frame)
        if self.slots_per_frame < 1:
            raise ValueError(f"trace slots per frame must be >= 1, got {slots_per_frame}")
        self.pattern = read_trace(path)
        self.rate = float(1.0 - self.pattern.mean())

    @classmethod
    def parse(cls, arg):
        path, _, k = arg.rpartition(",")
        if not (path and k.isdigit()):  # no ",K": the whole argument is the path
            path, k = arg, str(TRACE_SLOTS)
        if not Path(path).exists() and (TRACE_DIR / f"{path}.txt").exists():
            path = str(TRACE_DIR / f"{path}.txt")  # a shipped trace by name: trace:wifi
        return cls(path, int(k))

    def row(self, generator, slots, frame):
        idx = (frame * self.slots_per_frame + torch.arange(slots)) % len(self.pattern)
        return self.pattern[idx]

    def spec(self):
        return f"trace:{self.path}" + ("" if self.slots_per_frame == TRACE_SLOTS else f",{self.slots_per_frame}")


TRACE_CHARS = {"1": 1.0, ".": 1.0, "0": 0.0, "X": 0.0, "x": 0.0}


def read_trace(path) -> torch.Tensor:
    """A trace file (see :class:`TraceLoss`) -> (n,) float mask, 1 = delivered."""
    text = "".join(line for line in Path(path).read_text().splitlines() if not line.startswith("#"))
    chars = [c for c in text if not c.isspace()]
    bad = sorted({c for c in chars if c not in TRACE_CHARS})
    if bad or not chars:
        raise ValueError(f"trace {path}: " + (f"unexpected characters {''.join(bad)!r}; use 1/. (delivered) "
                                              "and 0/X (lost)" if bad else "no slots"))
    return torch.tensor([TRACE_CHARS[c] for c in chars])


def write_trace(mask: torch.Tensor, path, header: str = "", width: int = 64) -> None:
    """Write a (n,) mask as a trace file: '.' = delivered, 'X' = lost, ``width`` slots a line."""
    chars = "".join("." if v > 0.5 else "X" for v in mask.tolist())
    lines = [f"# {h}" for h in header.splitlines()] + [chars[i:i + width] for i in range(0, len(chars), width)]
    Path(path).write_text("\n".join(lines) + "\n")


# Conventional Gilbert-Elliott settings (README "Loss models" says where the figures come from).
PRESETS = {
    "wifi": "ge:0.01,2",
    "cellular": "ge:0.02,2",
    "lossy-wifi": "ge:0.05,2",
    "congested": "ge:0.1,2",
}


def parse_loss(spec: str) -> LossModel:
    """A loss spec (module docstring) -> a LossModel. Raises ValueError("bad loss spec ...")."""
    spec = PRESETS.get(spec, spec)
    name, _, arg = spec.partition(":")
    cls = LOSS_MODELS.get(name)
    if cls is None:
        raise ValueError(f"bad loss spec {spec!r}: unknown loss model {name!r}; choose from "
                         f"{', '.join([*LOSS_MODELS, *PRESETS])}")
    try:
        if name not in ("none",) and not arg:
            raise ValueError("missing its parameters")
        return cls.parse(arg)
    except (ValueError, OSError) as e:
        raise ValueError(f"bad loss spec {spec!r}: {e}; expected none, random:P, ge:P,L, burst:P,L, tail:K, "
                         f"grace:P,N, trace:FILE[,K] or a preset ({', '.join(PRESETS)})") from None


def frame_slots(model: LossModel, frame: int, slots: int, seed: int) -> torch.Tensor:
    """THE seeding rule: frame ``frame``'s (slots,) delivery mask, 1 = delivered (module docstring)."""
    return model.row(torch.Generator().manual_seed(frame_seed(seed, frame)), slots, frame).float()


def draws(model: LossModel, n_frames: int, slots: int, seed: int) -> torch.Tensor:
    """(n_frames, slots) delivery mask, row f = :func:`frame_slots` (model, f, slots, seed)."""
    if n_frames < 0 or slots < 0:
        raise ValueError(f"need n_frames >= 0 and slots >= 0, got {n_frames}, {slots}")
    rows = [frame_slots(model, f, slots, seed) for f in range(n_frames)]
    return torch.stack(rows) if rows else torch.ones(0, slots)


class LossEmulator:
    """The sender's emulator: ``pattern(frame, slots)`` is :func:`frame_slots`, as evaluate's draws."""

    def __init__(self, spec: str = "none", seed: int = 0):
        self.model, self.seed = parse_loss(spec), int(seed)

    def pattern(self, frame: int, slots: int) -> list[bool]:
        return [bool(v) for v in frame_slots(self.model, frame, slots, self.seed)]


def mode_model(mode: str, rate: float = 0.0, burst_len: float = DEFAULT_BURST_LEN, lost: int = 0) -> LossModel:
    """The loss model of a mode (none, tail, random, burst) in keyword form (``tail`` uses ``lost``)."""
    check_mode(mode)
    return TailLoss(lost) if mode == "tail" else LOSS_MODELS[mode].at_rate(rate, burst_len)


def loss_pattern(mode: str, slots: int, generator: torch.Generator, rate: float = 0.0,
                 burst_len: float = DEFAULT_BURST_LEN, lost: int = 0) -> torch.Tensor:
    """One row of ``mode`` from ``generator``: (slots,) mask, 1 = delivered (see :func:`mode_model`)."""
    return mode_model(mode, rate, burst_len, lost).row(generator, slots, 0)
