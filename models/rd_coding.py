"""Real bitstreams for LRAE_RD: every latent channel range coded alone with its level's prior.

The integer tables come from the learned factorized prior (``FactorizedPrior.integer_tables``,
made exact by ``codec.entropy.table_from_counts``), so a channel's bytes decode with its own table
and nothing else - any subset of channels (packets) decodes. Symbols outside a channel's table
support are clamped into it (rarer than the table's ``tail`` mass)::

    coder = RDCoder(model)                          # tables of every level, built once (integers)
    chans = coder.compress(x, quality=3)            # per frame: a list of C byte strings
    z = coder.decompress(chans, shape=(C, h, w), quality=3, received=mask)   # (B,C,h,w), lost = 0
    x_hat = model.decode(z, mask, quality=3)

What is coded here is the payload only; the wire format (headers, packets) is codec/'s business.
"""

from __future__ import annotations

import numpy as np
import torch

from codec.entropy import decode_symbols, encode_symbols
from models.rd_tables import prior_tables


class RDCoder:
    """Integer range-coder tables for every quality level of a trained ``LRAE_RD``."""

    def __init__(self, model, max_symbols: int = 255, tail: float = 1e-6):
        self.channels = model.latent_channels
        self.tables, self.offsets = prior_tables(model, max_symbols, tail)

    def symbols(self, z: torch.Tensor, quality: int) -> np.ndarray:
        """Rounded latent (B,C,h,w) -> table indices (int64), clamped into each channel's support."""
        z = np.rint(z.detach().float().cpu().numpy()).astype(np.int64)
        lo = self.offsets[quality][None, :, None, None]
        hi = lo + np.array([len(t) - 1 for t in self.tables[quality]])[None, :, None, None]
        return np.clip(z, lo, hi) - lo

    def compress(self, x_or_z: torch.Tensor, quality: int, model=None) -> list[list[bytes]]:
        """Per frame, one byte string per channel. Takes the latent from ``model.encode(x, quality)``
        when ``model`` is given, else the (unrounded or rounded) latent itself."""
        z = model.encode(x_or_z, quality) if model is not None else x_or_z
        sym = self.symbols(z, quality)
        return [[encode_symbols(sym[b, c], self.tables[quality][c]) for c in range(self.channels)]
                for b in range(sym.shape[0])]

    def decompress(self, frames: list[list[bytes | None]], shape: tuple[int, int, int], quality: int,
                   received: torch.Tensor | None = None) -> torch.Tensor:
        """Per frame, the byte strings of its channels (``None`` or ``received`` 0 = lost) -> the latent
        (B,C,h,w) float, lost channels zero."""
        c, h, w = shape
        out = np.zeros((len(frames), c, h, w), dtype=np.float32)
        for b, chans in enumerate(frames):
            for k, data in enumerate(chans):
                if data is None or (received is not None and not bool(received[b, k])):
                    continue
                sym = decode_symbols(data, h * w, self.tables[quality][k])
                out[b, k] = (sym + self.offsets[quality][k]).reshape(h, w)
        return torch.from_numpy(out)

    def estimated_bits(self, z: torch.Tensor, quality: int) -> np.ndarray:
        """Ideal code length (bits) per frame and channel under the integer tables: (B, C)."""
        sym = self.symbols(z, quality)
        bits = np.zeros(sym.shape[:2])
        for c, table in enumerate(self.tables[quality]):
            logp = np.log2(table / table.sum())
            bits[:, c] = -logp[sym[:, c]].reshape(sym.shape[0], -1).sum(1)
        return bits
