"""Channel and packet loss: the one place where "what arrived" is decided.

Convention (everywhere in LRAE-VC): a mask is a float tensor, **1 = received, 0 = lost**.
A latent ``z`` of shape (B, C, H, W) and a channel mask of shape (B, C) combine as
``z * mask[:, :, None, None]`` (see :func:`apply_mask`).

Training draws masks per sample (:func:`sample_masks`); evaluation uses explicit, reproducible
masks (:func:`eval_mask`); the network emulator and the codec baselines draw per-packet loss
patterns with :func:`loss_pattern`. Every random draw takes an explicit ``torch.Generator``.

Modes
- ``none``: everything arrives.
- ``tail``: keep the first C-k channels, k ~ U{0..max_drop} per sample (PNC's stochastic tail drop).
- ``random``: each channel lost independently with rate p ~ U(0, max_drop/C) per sample (GRACE-style).
- ``burst``: Gilbert-Elliott two-state chain over channel order, stationary loss rate
  p ~ U(0, max_drop/C) per sample and mean burst length ``burst_len``.
- ``mixed`` (training only): each sample draws one of tail, random, burst, so one model serves
  both the tail order of send-until-deadline and random network loss.
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


def gilbert_elliott(n: int, length: int, rate: torch.Tensor, burst_len: float,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` independent Gilbert-Elliott loss sequences of ``length`` steps; returns a mask (n, length).

    ``rate`` (n,) is the stationary loss probability of each sequence; bursts (runs of losses)
    have mean length ``burst_len``. The bad state loses everything, the good state nothing.
    """
    rate = torch.as_tensor(rate, dtype=torch.float64).expand(n).clamp(0.0, 0.999)
    p_bg = torch.full_like(rate, 1.0 / max(burst_len, 1.0))  # leave the bad state
    p_gb = (rate * p_bg / (1.0 - rate)).clamp(max=1.0)  # enter it; stationary P(bad) = rate
    u = torch.rand(n, length, generator=generator, dtype=torch.float64)
    bad = u[:, 0] < rate
    lost = torch.empty(n, length, dtype=torch.bool)
    for t in range(length):
        if t > 0:
            bad = torch.where(bad, u[:, t] >= p_bg, u[:, t] < p_gb)
        lost[:, t] = bad
    return (~lost).float()


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
    from a generator seeded with ``seed`` (same seed, same mask, on any machine);
    ``none`` ignores ``lost``.
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
    # burst: one contiguous run of `lost` channels at a random start (wrapping around)
    start = torch.randint(0, channels, (batch, 1), generator=g)
    pos = (torch.arange(channels).reshape(1, -1) - start) % channels
    return (pos >= lost).float()


def parse_loss_spec(spec: str) -> tuple[str, dict]:
    """Parse a network loss spec: ``none``, ``random:P``, ``burst:P,L``, ``tail:K``."""
    name, _, arg = spec.partition(":")
    try:
        if name == "none" and not arg:
            return "none", {}
        if name == "random":
            p = float(arg)
            if 0.0 <= p <= 1.0:
                return "random", {"rate": p}
        elif name == "burst":
            p, _, length = arg.partition(",")
            p, length = float(p), float(length or DEFAULT_BURST_LEN)
            if 0.0 <= p < 1.0 and length >= 1.0:
                return "burst", {"rate": p, "burst_len": length}
        elif name == "tail":
            k = int(arg)
            if k >= 0:
                return "tail", {"lost": k}
    except ValueError:
        pass
    raise ValueError(f"bad loss spec {spec!r}; expected none, random:P, burst:P,L or tail:K")


def loss_pattern(mode: str, slots: int, generator: torch.Generator, rate: float = 0.0,
                 burst_len: float = DEFAULT_BURST_LEN, lost: int = 0) -> torch.Tensor:
    """One loss pattern over ``slots`` ordered packet slots: (slots,) mask, 1 = delivered.

    Used by the sender's network emulator and by evaluation, so that our codec and the classic
    baselines see the same draws: slot j of frame f is lost for every method or for none.
    ``tail`` loses the last ``lost`` slots (no randomness).
    """
    check_mode(mode)
    if mode == "none" or slots == 0:
        return torch.ones(slots)
    if mode == "tail":
        return tail_mask(1, slots, min(lost, slots))[0]
    if mode == "random":
        return (torch.rand(slots, generator=generator, dtype=torch.float64) >= rate).float()
    return gilbert_elliott(1, slots, torch.tensor([rate]), burst_len, generator)[0]
