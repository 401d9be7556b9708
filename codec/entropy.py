"""Lossless entropy coding of quantised latent symbols with integer frequency tables.

Every symbol array is range coded (``constriction``'s RangeEncoder, 32-bit words, 24-bit
probabilities) with a **table**: a numpy int64 array of L weights, each >= 1, summing to exactly
``TOTAL = 2**24``. Symbol k then has probability table[k] / 2**24 *exactly*, on every machine:

- tables are built from integer counts with integer arithmetic only (:func:`table_from_counts`,
  :func:`parametric_table`), never from a float model that could round differently elsewhere;
- constriction's ``Categorical(p, perfect=False)`` turns floats into its fixed-point model as
  ``left_cdf[k] = floor(sum_{j<k} p_j * (2**24 - L) / sum(p)) + k``. We pass p = table - 1, whose sum
  is exactly 2**24 - L, so the scale is exactly 1.0, every partial sum is an exact integer (< 2**24,
  exact in float32 and float64) and the model's weights are exactly ``table`` - no rounding anywhere.
  tests/test_wire.py pins the coded bytes of a fixed message so a library change cannot slip by.

What is coded are row-DPCM residuals of the symbols (:func:`to_residuals`: left neighbour, first
column from above, mod L; inverted exactly by cumulative sums), which cost ~0.4 bit/symbol less
than the symbols themselves on LRAE_VC latents. Coded bytes are the encoder's uint32 words in
big-endian order with up to three trailing zero bytes of the last word dropped (they are restored
before decoding, so the words are identical).

Two kinds of tables:
- **calibrated**: per-channel counts measured on training data (codec/quant.calibrate), like PNC's
  per-channel Huffman tables;
- **parametric**: for checkpoints without calibration, a fixed family indexed by (centre, width):
  binomial coefficients C(m, m/2 + d) of the circular distance d = min(|k - c|, L - |k - c|), with
  m = 2**width (a discretised Gaussian, sigma = sqrt(m)/2 bins), width 0 meaning uniform. The sender picks
  the member that codes the frame's channel shortest and sends its two indices.
"""

from __future__ import annotations

from functools import lru_cache

import constriction
import numpy as np

PRECISION = 24
TOTAL = 1 << PRECISION
MAX_WIDTH = 16  # parametric widths 1..16: m = 2 .. 65536 (sigma 0.7 .. 128 bins); 0 = uniform


class EntropyError(ValueError):
    """Coded bytes that do not decode to the expected number of symbols."""


def table_from_counts(counts) -> np.ndarray:
    """Integer counts (L,) -> table (L,) int64, each >= 1, summing to TOTAL. Pure integer arithmetic.

    Weight k = 1 + floor(counts[k] * (TOTAL - L) / N); what floor leaves over goes to the most
    frequent symbol (the first one on ties).
    """
    c = [int(v) for v in np.asarray(counts).reshape(-1)]
    n_sym = len(c)
    if n_sym < 2 or n_sym > 1 << 16 or min(c) < 0:
        raise ValueError(f"counts must be >= 0 with 2..65536 entries, got {n_sym} entries")
    total = sum(c)
    free = TOTAL - n_sym
    if total == 0:
        c, total = [1] * n_sym, n_sym
    w = [1 + (v * free) // total for v in c]
    w[max(range(n_sym), key=lambda k: (c[k], -k))] += TOTAL - sum(w)
    return np.array(w, dtype=np.int64)


@lru_cache(maxsize=4096)
def parametric_table(levels: int, centre: int, width: int) -> np.ndarray:
    """Member (centre, width) of the fixed table family over ``levels`` symbols (see module docstring)."""
    if not 0 <= centre < levels or not 0 <= width <= MAX_WIDTH:
        raise ValueError(f"bad parametric table (centre {centre}, width {width}) for {levels} symbols")
    if width == 0:
        return table_from_counts([1] * levels)
    shape = _shape(width, levels)
    return table_from_counts([shape[min(abs(k - centre), levels - abs(k - centre))] for k in range(levels)])


@lru_cache(maxsize=256)
def _shape(width: int, levels: int) -> tuple[int, ...]:
    """floor(2**40 * C(m, m/2 + d) / C(m, m/2)) for d = 0..levels-1 (0 beyond m/2), m = 2**width.

    Exact integer arithmetic (the binomial ratio by the recurrence C(m,j+1) = C(m,j)(m-j)/(j+1)).
    """
    m = 1 << width
    half = m // 2
    num, den, out = 1, 1, []
    for d in range(levels):
        out.append((num << 40) // den if d <= half else 0)
        num *= half - d  # C(m, half+d+1) / C(m, half) = prod (half-j) / (half+j+1)
        den *= half + d + 1
    return tuple(out)


@lru_cache(maxsize=8)
def _log_tables(levels: int) -> np.ndarray:
    """-log2 probabilities of every family member: (levels * (MAX_WIDTH + 1), levels) float64."""
    rows = [parametric_table(levels, c, w) for c in range(levels) for w in range(MAX_WIDTH + 1)]
    return PRECISION - np.log2(np.array(rows, dtype=np.float64))


def best_parametric(hist: np.ndarray) -> tuple[int, int]:
    """(centre, width) of the family member with the shortest code for a symbol histogram (L,).

    Encoder-side choice only (floats are fine here: the decoder just reads the two indices).
    """
    hist = np.asarray(hist, dtype=np.float64)
    levels = hist.shape[0]
    cost = _log_tables(levels) @ hist
    best = int(np.argmin(cost))
    return best // (MAX_WIDTH + 1), best % (MAX_WIDTH + 1)


@lru_cache(maxsize=4096)
def _model_cached(table_bytes: bytes):
    table = np.frombuffer(table_bytes, dtype=np.int64)
    return constriction.stream.model.Categorical((table - 1).astype(np.float64), perfect=False)


def model_for(table: np.ndarray):
    """The constriction model whose fixed-point weights are exactly ``table`` (cached)."""
    table = np.ascontiguousarray(table, dtype=np.int64)
    if table.ndim != 1 or int(table.sum()) != TOTAL or int(table.min()) < 1:
        raise ValueError("a table must be 1-D, every weight >= 1, summing to 2**24")
    return _model_cached(table.tobytes())


def encode_symbols(symbols: np.ndarray, table: np.ndarray) -> bytes:
    """Range code symbols (any shape, values in 0..len(table)-1) -> bytes."""
    sym = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
    if sym.size and (int(sym.min()) < 0 or int(sym.max()) >= len(table)):
        raise ValueError(f"symbols outside 0..{len(table) - 1}")
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(sym, model_for(table))
    data = enc.get_compressed().astype(">u4").tobytes()
    end = len(data)
    while end > len(data) - 3 and end > 0 and data[end - 1] == 0:
        end -= 1
    return data[:end]


def decode_symbols(data: bytes, count: int, table: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: ``count`` symbols (int64) from the coded bytes."""
    padded = bytes(data) + b"\0" * (-len(data) % 4)
    words = np.frombuffer(padded, dtype=">u4").astype(np.uint32)
    try:
        dec = constriction.stream.queue.RangeDecoder(words)
        out = dec.decode(model_for(table), int(count))
    except Exception as e:  # constriction raises on data that cannot come from the encoder
        raise EntropyError(f"entropy decoding failed: {e}") from None
    return np.asarray(out, dtype=np.int64)


def to_residuals(q: np.ndarray, levels: int) -> np.ndarray:
    """Row-DPCM (PNG's "Sub" filter): each symbol minus its left neighbour, the first column minus
    the one above (the first symbol minus 0), all mod ``levels``. q: (..., rows, w) ints in 0..levels-1."""
    q = np.asarray(q, dtype=np.int64)
    r = np.empty_like(q)
    r[..., 1:] = q[..., 1:] - q[..., :-1]
    r[..., 1:, 0] = q[..., 1:, 0] - q[..., :-1, 0]
    r[..., :1, 0] = q[..., :1, 0]
    return np.mod(r, levels)


def from_residuals(r: np.ndarray, levels: int) -> np.ndarray:
    """Inverse of :func:`to_residuals` (two cumulative sums, exact integer arithmetic)."""
    r = np.asarray(r, dtype=np.int64)
    first = np.cumsum(r[..., 0], axis=-1) - r[..., 0]  # (..., rows): the column-0 prefix minus itself
    return np.mod(np.cumsum(r, axis=-1) + first[..., None], levels)


def code_length_bits(hist: np.ndarray, table: np.ndarray) -> float:
    """Ideal code length in bits of a histogram under a table (for reports; the coder adds < 64 bits)."""
    return float(np.dot(np.asarray(hist, dtype=np.float64), PRECISION - np.log2(table.astype(np.float64))))
