"""Write a variable-rate model's learned entropy tables into its checkpoint (wire mode 2, codec/learned.py).

The tables are computed ONCE, here, from the trained priors (as models/rd_coding.RDCoder: per level and
channel ``FactorizedPrior.integer_tables`` made exact by ``codec.entropy.table_from_counts``; a support
of one symbol - a channel whose prior holds all but the tail on one value - gets a second symbol of
weight 1, since a range-coder table needs two) and
stored as plain int64 tensors in ``ckpt["extra"]["codec"]``; senders and receivers read them and never
recompute floats, so the coded bytes are the same on every machine. The model fingerprint covers them.
Any uniform calibration in that entry is replaced (a model with quality levels codes only with its
learned tables)::

    python -m models.rd_tables runs/012-LRAE_RD-mixed/LRAE_RD_final_w_mixed_drops.pth        # in place
    python -m models.rd_tables best.pth --out LRAE_RD.pth

From a training script, at its end: ``extra={"codec": learned_codec(model)}`` for a model with levels.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from codec.entropy import table_from_counts
from codec.learned import pack_tables
from models.rd import LRAE_RD
from models.registry import load_model
from utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def prior_tables(model, max_symbols: int = 255, tail: float = 1e-6) -> tuple[list[list[np.ndarray]], list[np.ndarray]]:
    """Per quality level, each channel's exact range-coder table and the offset of its first symbol, from
    the model's learned priors. A channel whose prior put all its mass on one symbol (an unused channel)
    gets a second, never-used symbol: the coder needs two (its bytes are then ~nothing)."""
    tables, offsets = [], []
    for prior in model.priors:
        counts, offs = prior.integer_tables(max_symbols=max_symbols, tail=tail)
        tables.append([table_from_counts(np.append(c, 0) if len(c) < 2 else c) for c in counts])
        offsets.append(offs)
    return tables, offsets


def learned_codec(model, max_symbols: int = 255, tail: float = 1e-6) -> dict:
    """The ``ckpt["extra"]["codec"]`` entry of a model with learned priors (LRAE_RD): integer tensors only."""
    return pack_tables(*prior_tables(model, max_symbols, tail))


def add_tables(path: str, out: str | None = None) -> dict:
    """Load the checkpoint at ``path``, store its model's learned tables, save to ``out`` (default: in place)."""
    ckpt = load_checkpoint(path)
    model = load_model(ckpt)
    if not isinstance(model, LRAE_RD):
        raise CheckpointError(f"{path} holds a {ckpt['model']} model, which has no learned priors")
    ckpt["extra"] = {**(ckpt.get("extra") or {}), "codec": learned_codec(model)}
    save_checkpoint(out or path, ckpt)
    return ckpt["extra"]["codec"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint of a model with learned priors (LRAE_RD)")
    p.add_argument("--out", default=None, help="write here instead of in place")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cal = add_tables(args.checkpoint, args.out)
    except (CheckpointError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    levels, channels, width = cal["learned_tables"].shape
    print(f"{args.out or args.checkpoint}: learned tables for {levels} levels x {channels} channels "
          f"(widest {int(cal['learned_sizes'].max())} of {width} symbols)")
    return cal


if __name__ == "__main__":
    main(sys.argv[1:])
