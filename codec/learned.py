"""Learned-table mode (wire mode 2): integer range-coder tables per (quality level, channel).

A variable-rate model with a learned entropy model (LRAE_RD: a factorized prior per quality level)
codes each latent channel's rounded values with its own table, so every channel (packet) decodes
alone. The tables are computed ONCE from the trained priors (models/rd_tables.py, float work on the
machine that writes them) and stored in the checkpoint as plain integer tensors; sender and receiver
only read them, so the coded bytes are the same on every machine. ``ckpt["extra"]["codec"]``::

    version          int64 scalar  LEARNED_VERSION
    learned_tables   (L, C, S)     int64 range-coder weights (codec/entropy.py tables, each row's first
                                   ``size`` entries >= 1 summing to 2**24), zero beyond ``size``
    learned_sizes    (L, C)        int64 table length (support size), 2..MAX_SYMBOLS
    learned_offsets  (L, C)        int64 latent value of table index 0

L = quality levels, C = latent channels. A rounded latent value v of channel c at level q is sent as
index clamp(v - offset[q, c], 0, size[q, c] - 1) (the tables' support holds all but a tiny tail of
the prior's mass) and received as index + offset[q, c].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from codec.entropy import TOTAL

LEARNED_VERSION = 1
MAX_SYMBOLS = 256  # one table per channel and level stays small; the header's ``bits`` says 8
MAX_LEVELS = 255  # the header's quality byte
MAX_OFFSET = 1 << 20  # latent values stay exact in float32
KEYS = ("learned_tables", "learned_sizes", "learned_offsets")


def is_learned(cal: dict | None) -> bool:
    """Whether a checkpoint's codec entry holds learned tables (rather than a uniform calibration)."""
    return isinstance(cal, dict) and "learned_tables" in cal


def pack_tables(tables: list[list[np.ndarray]], offsets) -> dict[str, torch.Tensor]:
    """Per level a list of per-channel tables (int64, each summing to 2**24) and per level the (C,)
    offsets -> the checkpoint entry (module docstring). Validated as a receiver would."""
    levels, channels = len(tables), len(tables[0]) if tables else 0
    width = max((len(t) for row in tables for t in row), default=0)
    packed = torch.zeros(levels, channels, width, dtype=torch.int64)
    sizes = torch.zeros(levels, channels, dtype=torch.int64)
    for q, row in enumerate(tables):
        for c, t in enumerate(row):
            packed[q, c, :len(t)] = torch.from_numpy(np.asarray(t, dtype=np.int64))
            sizes[q, c] = len(t)
    cal = {"version": torch.tensor(LEARNED_VERSION), "learned_tables": packed, "learned_sizes": sizes,
           "learned_offsets": torch.as_tensor(np.asarray(offsets), dtype=torch.int64).reshape(levels, channels)}
    load_tables(cal, channels, levels)
    return cal


@dataclass(frozen=True)
class LearnedTables:
    """The tables of every (level, channel) as numpy int64 arrays, and the (L, C) offsets."""

    tables: tuple[tuple[np.ndarray, ...], ...]
    offsets: np.ndarray

    @property
    def levels(self) -> int:
        return len(self.tables)

    def symbols(self, z: torch.Tensor, quality: int) -> np.ndarray:
        """Latent (C,h,w), already scaled by the level's gain -> table indices (C,h,w) int64 (rounded, clamped)."""
        v = np.rint(z.detach().float().cpu().numpy()).astype(np.int64)
        off = self.offsets[quality][:, None, None]
        top = np.array([len(t) - 1 for t in self.tables[quality]])[:, None, None]
        return np.clip(v - off, 0, top)

    def coded(self, z: torch.Tensor, quality: int) -> torch.Tensor:
        """Latent (C,h,w) -> the values a receiver decodes from its packets (rounded, clamped to the tables)."""
        return torch.from_numpy((self.symbols(z, quality) + self.offsets[quality][:, None, None]).astype(np.float32))

    def values(self, symbols: np.ndarray, quality: int, channel: int) -> torch.Tensor:
        """Decoded table indices of one channel -> its latent values (float32)."""
        return torch.from_numpy((symbols + self.offsets[quality][channel]).astype(np.float32))


def load_tables(cal: dict, channels: int, levels: int) -> LearnedTables:
    """Check a checkpoint's learned tables against the model (``channels``, ``levels``) and every table
    against the coder's rules; raises ValueError with what is wrong."""
    try:
        t, sizes, offsets = (cal[k] for k in KEYS)
        version = int(cal.get("version", LEARNED_VERSION))
        shapes = tuple(t.shape), tuple(sizes.shape), tuple(offsets.shape)
        dtypes = {t.dtype, sizes.dtype, offsets.dtype}
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ValueError(f"learned tables malformed ({e})") from None
    if version != LEARNED_VERSION:
        raise ValueError(f"learned tables of version {version}, this code reads {LEARNED_VERSION}")
    if dtypes != {torch.int64} or len(shapes[0]) != 3 or shapes[1] != shapes[0][:2] or shapes[2] != shapes[0][:2]:
        raise ValueError(f"learned tables must be int64 (L,C,S), (L,C), (L,C); got {shapes}")
    if shapes[0][:2] != (levels, channels) or not 1 <= levels <= MAX_LEVELS:
        raise ValueError(f"learned tables for {shapes[0][0]} levels x {shapes[0][1]} channels, the model has "
                         f"{levels} x {channels}")
    if shapes[0][2] > MAX_SYMBOLS or bool((sizes < 2).any()) or bool((sizes > shapes[0][2]).any()):
        raise ValueError(f"learned table sizes must be 2..{min(shapes[0][2], MAX_SYMBOLS)}")
    if bool((offsets.abs() > MAX_OFFSET).any()):
        raise ValueError(f"learned table offsets beyond +-{MAX_OFFSET}")
    inside = torch.arange(shapes[0][2])[None, None, :] < sizes[:, :, None]
    if bool((t[inside] < 1).any()) or bool((t[~inside] != 0).any()) or bool((t.sum(-1) != TOTAL).any()):
        raise ValueError("learned tables must hold weights >= 1 summing to 2**24 within their size, 0 beyond")
    rows = tuple(tuple(t[q, c, :int(sizes[q, c])].numpy().copy() for c in range(channels)) for q in range(levels))
    return LearnedTables(rows, offsets.numpy().copy())
