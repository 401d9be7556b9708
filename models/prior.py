"""A learned per-channel density for quantised latents: Ballé et al.'s non-parametric factorized prior.

Ballé, Minnen, Singh, Hwang, Johnston, "Variational image compression with a scale hyperprior",
ICLR 2018, appendix 6.1. Each channel c has its own cumulative distribution ``F_c``, a small
monotone network R -> (0, 1) (matrices kept non-negative with softplus, tanh gates with factors
kept > -1); the probability of an integer symbol k is ``F_c(k + 1/2) - F_c(k - 1/2)``.

    prior = FactorizedPrior(channels)
    p = prior.likelihood(y_tilde)            # (B,C,h,w), y_tilde = y + U(-1/2, 1/2) in training
    bits = -torch.log2(p).sum()              # the rate term R of lambda*D + R
    tables, offsets = prior.integer_tables(max_symbols=255)   # for the range coder, per channel

Packet independence follows from the factorization: a channel's symbols are coded with its own
table alone, so any channel (any packet) decodes without the others.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LIKELIHOOD_FLOOR = 1e-9  # keeps log2 finite; also the smallest probability a table entry gets


class FactorizedPrior(nn.Module):
    """Per-channel learned CDF. ``likelihood(y)``: y (B,C,...) -> probabilities of the unit bins around y."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        self.channels = channels
        dims = (1, *filters, 1)
        scale = init_scale ** (1.0 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1.0 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """x (C, 1, N) -> logits of F_c(x), (C, 1, N)."""
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            x = torch.matmul(F.softplus(m), x) + b
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """Probability mass of [y - 1/2, y + 1/2] per element of y (B, C, ...), computed in float32."""
        shape = y.shape
        with torch.autocast(device_type=y.device.type, enabled=False):
            v = y.float().transpose(0, 1).reshape(self.channels, 1, -1)
            lower, upper = self.logits_cdf(v - 0.5), self.logits_cdf(v + 0.5)
            sign = -torch.sign(lower + upper).detach()  # evaluate in the tail where sigmoid is accurate
            p = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
            p = p.clamp_min(LIKELIHOOD_FLOOR)
        return p.reshape(self.channels, shape[0], *shape[2:]).transpose(0, 1)

    @torch.no_grad()
    def pmf(self, lo: int, hi: int) -> torch.Tensor:
        """(C, hi - lo + 1) probabilities of the integer symbols lo..hi per channel."""
        k = torch.arange(lo, hi + 1, dtype=torch.float32, device=self.biases[0].device)
        v = k.reshape(1, 1, -1).expand(self.channels, 1, -1)
        lower, upper = self.logits_cdf(v - 0.5), self.logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper)
        return (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()[:, 0]

    @torch.no_grad()
    def integer_tables(self, max_symbols: int = 255, tail: float = 1e-6, search: int = 512,
                       scale: int = 1 << 20) -> tuple[list[np.ndarray], np.ndarray]:
        """Per channel an integer count table over its support [offset, offset + len - 1] and the offsets.

        The support is the smallest symmetric-around-the-mode range holding all but ``tail`` of the
        mass, at most ``max_symbols`` wide; the encoder clamps symbols into it (a clamped symbol is
        rarer than ``tail``). Counts are round(p * scale) - turned into exact range-coder tables by
        ``codec.entropy.table_from_counts``, which gives every symbol a weight of at least 1.
        """
        p = self.pmf(-search, search).double().cpu()
        counts, offsets = [], []
        for row in p:
            mode = int(row.argmax())
            half = 0
            while half < max_symbols // 2 and row[max(mode - half, 0):mode + half + 1].sum() < 1.0 - tail:
                half += 1
            lo, hi = max(mode - half, 0), min(mode + half, len(row) - 1)
            counts.append(np.rint(row[lo:hi + 1].numpy() * scale).astype(np.int64).clip(min=0))
            offsets.append(lo - search)
        return counts, np.asarray(offsets, dtype=np.int64)
