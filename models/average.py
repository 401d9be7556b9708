"""Interpolate the weights of a model and its fine-tune (WiSE-FT, Wortsman et al., CVPR 2022).

    python -m models.average BASE.pth FINETUNED.pth --weight 0.8 --out MIXED.pth

``(1 - weight) * BASE + weight * FINETUNED``, tensor by tensor: both checkpoints must hold the same model
(name, constructor arguments, tensor names and shapes). The result keeps FINETUNED's metadata; learned
entropy tables (``extra["codec"]``, which belong to the weights) are recomputed for the new weights when
the model has quality levels (models/rd_tables.py), and dropped otherwise. The shipped LRAE_RD is such a
mix between a clean model and its fine-tune with channel loss: the fine-tune trades clean RD quality for
robustness, and the weight picks the point between them (checkpoints/MANIFEST.md).
"""

from __future__ import annotations

import argparse
import sys

from models.rd_tables import learned_codec
from models.registry import load_model
from utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def average(base: dict, tuned: dict, weight: float) -> dict:
    """The checkpoint ``(1 - weight) * base + weight * tuned`` (module docstring)."""
    if base["model"] != tuned["model"] or base.get("model_kwargs") != tuned.get("model_kwargs"):
        raise CheckpointError(f"cannot mix a {base['model']} {base.get('model_kwargs')} with a {tuned['model']} "
                              f"{tuned.get('model_kwargs')}: they must be the same model")
    a, b = base["state_dict"], tuned["state_dict"]
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise CheckpointError("the two checkpoints' tensors differ in names or shapes")
    mixed = {k: ((1 - weight) * a[k].double() + weight * b[k].double()).to(a[k].dtype) if a[k].is_floating_point()
             else b[k] for k in a}
    extra = {k: v for k, v in (tuned.get("extra") or {}).items() if k != "codec"}
    out = {**tuned, "state_dict": mixed, "extra": extra}
    model = load_model(out)
    if getattr(model, "levels", 1) > 1:
        out["extra"] = {**extra, "codec": learned_codec(model)}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", help="the model fine-tuned from")
    p.add_argument("tuned", help="its fine-tune")
    p.add_argument("--weight", type=float, required=True, help="weight of the fine-tune, 0..1")
    p.add_argument("--out", required=True, help="where to write the mixed checkpoint")
    args = p.parse_args(argv if argv is not None else sys.argv[1:])
    if not 0.0 <= args.weight <= 1.0:
        raise SystemExit(f"error: --weight must be in [0, 1], got {args.weight}")
    try:
        out = average(load_checkpoint(args.base), load_checkpoint(args.tuned), args.weight)
    except (CheckpointError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    save_checkpoint(args.out, out)
    print(f"{args.out}: {1 - args.weight:g} x {args.base} + {args.weight:g} x {args.tuned}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
