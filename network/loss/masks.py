"""Masks over latent channels: the convention, training dropout and exact evaluation masks.

Convention (everywhere in LRAE-VC): a mask is a float tensor, **1 = received, 0 = lost**.
A latent ``z`` of shape (B, C, H, W) and a channel mask of shape (B, C) combine as
``z * mask[:, :, None, None]`` (see :func:`apply_mask`).

Training masks (:func:`sample_masks`, ``--drop-mode``) draw per sample over channel order:
``none``; ``tail`` (keep the first C-k channels, k ~ U{0..max_drop}, PNC's stochastic tail drop);
``random`` (each channel lost with rate p ~ U(0, max_drop/C), GRACE-style); ``burst``
(Gilbert-Elliott over channel order, rate p ~ U(0, max_drop/C), mean burst ``burst_len``);
``mixed`` (one of tail, random, burst per sample). :func:`eval_mask` gives exact, seeded masks.
Every random draw takes an explicit ``torch.Generator`` or seed.
"""

from __future__ import annotations

import torch

MODES = ("none", "tail", "random", "burst")
TRAIN_MODES = MODES + ("mixed",)
DEFAULT_BURST_LEN = 3.0


def check_mode(mode: str, modes: tuple[str, ...] = MODES) -> str:
    if mode not in modes:
        raise ValueError(f"unknown loss mode {mode!r}; choose from {', '.join(modes)}")
    return mode


def apply_mask(z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the lost channels of ``z`` (B, C, ...) given ``mask`` (B, C), 1 = received."""
    if mask is None:
        return z
    shape = mask.shape + (1,) * (z.dim() - mask.dim())
    return z * mask.to(z.dtype).reshape(shape)


def tail_mask(batch: int, channels: int, lost: torch.Tensor | int) -> torch.Tensor:
    """Mask keeping the first ``channels - lost`` channels; ``lost`` is an int or a (B,) tensor."""
    lost = torch.as_tensor(lost).expand(batch).reshape(batch, 1)
    keep = channels - lost
    return (torch.arange(channels).reshape(1, channels) < keep).float()


def ge_chain(u: torch.Tensor, rate: torch.Tensor, burst_len: float) -> torch.Tensor:
    """Gilbert-Elliott losses from uniforms ``u`` (n, length) float64 -> lost (n, length) bool.

    ``rate`` (n,) is the stationary loss probability; the bad state (loses everything) is left with
    probability 1/``burst_len`` per step, so bursts have mean length ``burst_len``; the good state
    loses nothing. Step 0 starts from the stationary distribution. Step t uses ``u[:, t]`` only, so
    a shorter ``u`` gives a prefix of the same chain.
    """
    n, length = u.shape
    rates = torch.as_tensor(rate, dtype=torch.float64).expand(n).clamp(0.0, 0.999).tolist()
    p_bg = 1.0 / max(burst_len, 1.0)  # leave the bad state
    lost = []
    for row, r in zip(u.tolist(), rates):  # plain floats (float64, as u): far faster than tensor steps
        p_gb = min(r * p_bg / (1.0 - r), 1.0)  # enter it; stationary P(bad) = r
        bad, out = False, []
        for t, v in enumerate(row):
            bad = (v < r) if t == 0 else ((v >= p_bg) if bad else (v < p_gb))
            out.append(bad)
        lost.append(out)
    return torch.tensor(lost, dtype=torch.bool).reshape(n, length)


def gilbert_elliott(n: int, length: int, rate: torch.Tensor, burst_len: float,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` independent Gilbert-Elliott loss sequences of ``length`` steps; returns a mask (n, length)."""
    u = torch.rand(n, length, generator=generator, dtype=torch.float64)
    return (~ge_chain(u, rate, burst_len)).float()


def sample_masks(mode: str, batch: int, channels: int, max_drop: int,
                 generator: torch.Generator | None = None,
                 burst_len: float = DEFAULT_BURST_LEN) -> torch.Tensor:
    """Draw one training mask per sample: (batch, channels), 1 = received.

    ``max_drop`` is the most channels a sample may lose (``--drops``); for ``random`` and
    ``burst`` it sets the largest per-sample loss rate, ``max_drop / channels``.
    """
    check_mode(mode, TRAIN_MODES)
    max_drop = int(min(max(max_drop, 0), channels))
    if mode == "none" or max_drop == 0:
        return torch.ones(batch, channels)
    if mode == "mixed":
        which = torch.randint(0, 3, (batch, 1), generator=generator)
        masks = [sample_masks(m, batch, channels, max_drop, generator, burst_len) for m in ("tail", "random", "burst")]
        return torch.where(which == 0, masks[0], torch.where(which == 1, masks[1], masks[2]))
    if mode == "tail":
        lost = torch.randint(0, max_drop + 1, (batch,), generator=generator)
        return tail_mask(batch, channels, lost)
    rate = torch.rand(batch, generator=generator, dtype=torch.float64) * (max_drop / channels)
    if mode == "random":
        u = torch.rand(batch, channels, generator=generator, dtype=torch.float64)
        return (u >= rate[:, None]).float()
    return gilbert_elliott(batch, channels, rate, burst_len, generator)


def eval_mask(mode: str, batch: int, channels: int, lost: int, seed: int = 0) -> torch.Tensor:
    """A reproducible evaluation mask losing exactly ``lost`` channels per sample.

    ``tail`` loses the last ``lost`` channels; ``random`` loses ``lost`` channels chosen per sample
    from a generator seeded with ``seed`` (same seed, same mask, on any machine); ``burst`` one
    contiguous (wrapping) run of ``lost`` channels; ``none`` ignores ``lost``.
    """
    check_mode(mode)
    lost = int(min(max(lost, 0), channels))
    if mode == "none" or lost == 0:
        return torch.ones(batch, channels)
    if mode == "tail":
        return tail_mask(batch, channels, lost)
    g = torch.Generator().manual_seed(seed)
    if mode == "random":
        order = torch.stack([torch.randperm(channels, generator=g) for _ in range(batch)])
        return (order >= lost).float()
    start = torch.randint(0, channels, (batch, 1), generator=g)
    pos = (torch.arange(channels).reshape(1, -1) - start) % channels
    return (pos >= lost).float()
