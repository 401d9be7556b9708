"""What evaluate.py writes: results.json (valid JSON, no NaN), results.md, and the PNG plots.

- ``quality_vs_loss.png``: PSNR, SSIM, fresh frames, time frozen (and accuracy) vs loss rate, one line per method;
- ``rd_curve.png``: PSNR and SSIM vs payload bytes/frame at 0 % loss (ours per quantiser bits, JPEG
  and WebP over their quality range, H.264 over CRF) with the matched operating points of the run;
- ``rd_under_loss.png`` (with ``--bitrates``): PSNR vs payload bytes/frame, one panel per loss condition;
- ``strip.png``: a few frames at (about) 30 % loss: original, then the registry's strip methods
  (ours | ours+convlstm | JPEG | H.264).

Every method's plot style comes from its entry in :mod:`evaluation.methods`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.ticker import FuncFormatter

from evaluation import methods
from utils import plots  # sets the Agg backend
from utils.plots import plt

TIMING_FIELDS = ("encode_ms", "decode_ms")


def clean(obj, digits: int = 6):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, floats rounded to ``digits`` decimals."""
    if isinstance(obj, dict):
        return {str(k): clean(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v, digits) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else round(float(obj), digits)
    if isinstance(obj, torch.Tensor):
        return clean(obj.tolist(), digits)
    return obj


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(clean(payload), indent=1, allow_nan=False) + "\n")


def _fmt(v, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def _settings(r: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in r.get("params", {}).items()
                     if k in ("quality", "crf", "bits", "fec", "over_budget"))


# results.md columns: header, alignment, cell of a (cleaned) row
COLUMNS = {
    "method": ("method", "---", lambda r: r["method"]),
    "loss": ("loss %", "---:", lambda r: f"{100 * r['loss_rate']:g}"),
    "bytes": ("bytes/frame", "---:", lambda r: _fmt(r["bytes_per_frame"], ".0f")),
    "packets": ("packets", "---:", lambda r: _fmt(r["packets_per_frame"], ".1f")),
    "bpp": ("bpp", "---:", lambda r: _fmt(r["bpp"], ".3f")),
    "psnr": ("PSNR dB", "---:", lambda r: _fmt(r["psnr"])),
    "ssim": ("SSIM", "---:", lambda r: _fmt(r["ssim"], ".4f")),
    "ms_ssim": ("MS-SSIM", "---:", lambda r: _fmt(r["ms_ssim"], ".4f")),
    "ssim_db": ("SSIM dB", "---:", lambda r: _fmt(r["ssim_db"])),
    "fresh": ("fresh", "---:", lambda r: _fmt(r["fresh_frames"], ".2f")),
    "freeze": ("freeze ms total / p95", "---:",
               lambda r: f"{_fmt(r.get('freeze_ms_total'), '.0f')} / {_fmt(r.get('freeze_ms_p95'), '.0f')}"),
    "accuracy": ("accuracy", "---:", lambda r: _fmt(r["accuracy"], ".3f")),
    "head": ("head acc", "---:", lambda r: _fmt(r.get("head_accuracy"), ".3f")),
    "enc": ("enc ms", "---:", lambda r: _fmt(r["encode_ms"])),
    "dec": ("dec ms", "---:", lambda r: _fmt(r["decode_ms"])),
    "settings": ("settings", "---", _settings),
}
MAIN_TABLE = tuple(COLUMNS)
BUDGET_TABLE = ("method", "loss", "bytes", "psnr", "ssim_db", "fresh", "freeze", "settings")


def table(rows: list[dict], columns=MAIN_TABLE) -> list[str]:
    """A markdown table of ``rows`` with the named ``COLUMNS``."""
    cols = [COLUMNS[c] for c in columns]
    return ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "|".join(c[1] for c in cols) + "|",
            *("| " + " | ".join(c[2](r) for c in cols) + " |" for r in rows)]


def nearest_rate_points(rows: list[dict], budget: float) -> list[dict]:
    """Per method without a budget (ours) and loss condition, the rate point closest to ``budget`` bytes."""
    best: dict[tuple, dict] = {}
    for r in rows:
        if r.get("budget") is None:
            key = (r["method"], r["loss_model"], r["loss_rate"], r["burst_len"])
            if key not in best or abs(r["bytes_per_frame"] - budget) < abs(best[key]["bytes_per_frame"] - budget):
                best[key] = r
    return list(best.values())


SWEPT = ("random", "iid", "ge", "burst", "tail")  # --loss families swept over --rates: the rate names the column


def operating_points(rd_loss: list[dict], budget: float) -> list[str]:
    """One markdown table per budget: a row per method, a column per loss condition, each cell
    "PSNR dB (fresh %)" (ours at its rate point nearest the budget, its bytes in the method cell)."""
    rows = [r for r in rd_loss if r.get("budget") == budget] + nearest_rate_points(rd_loss, budget)
    conditions = list(dict.fromkeys((r["loss_model"], r["loss_rate"]) for r in rd_loss))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["loss_model"], r["loss_rate"]): r for r in rows}
    head = [m if ":" in m or m not in SWEPT else f"{m} ({100 * rate:g} %)" for m, rate in conditions]
    lines = ["| method, B/frame | " + " | ".join(head) + " |", "|---|" + "---:|" * len(conditions)]
    for m in methods:
        got = [cell.get((m, *c)) for c in conditions]
        nbytes = next(r["bytes_per_frame"] for r in got if r is not None)
        lines.append(f"| {m}, {nbytes:.0f} | " + " | ".join(
            "–" if r is None else f"{_fmt(r['psnr'])} ({100 * r['fresh_frames']:.0f} %)" for r in got) + " |")
    return lines


def markdown(payload: dict) -> str:
    """results.md: the run's settings and one table row per method and loss rate; with RD rows under loss,
    the BD-rates and one table per budget (ours at its rate point nearest the budget)."""
    cfg = payload["config"]
    lines = [f"# Evaluation: {cfg['model']} on {cfg['frames']} frames ({cfg['split']} split of "
             f"{' '.join(cfg['data'])}), {cfg['size']}x{cfg['size']}", "",
             f"Loss model `{cfg['loss']}`, seed {cfg['seed']}, packets of <= {cfg['packet_payload']} B payload; "
             f"our payload {cfg['target_bytes']:.0f} B/frame in {cfg['our_packets']} packets is the baselines' "
             "byte budget. Bytes are payload bytes sent per frame (headers not counted); PSNR/SSIM on the "
             "displayed 8-bit frames; *fresh* = share of frames showing their own decode; a *freeze* is a run "
             f"of frames that are not fresh, in ms at {cfg.get('fps', 30):g} fps; ms per frame.", "",
             *table(payload["results"])]
    clean_bd = [b for b in payload.get("bd_rate_clean") or [] if b["bd_rate"] is not None]
    if clean_bd:
        lines += ["", "## BD-rate at 0 % loss", "",
                  "Bjøntegaard delta rate of ours against each baseline over the RD curves of rd_curve.png (ours "
                  "at each rate point, each baseline over its quality / CRF sweep; bytes per frame vs PSNR; "
                  "negative = ours needs fewer bytes for the same PSNR).", "",
                  "| method | anchor | BD-rate % |", "|---|---|---:|"]
        lines += [f"| {b['method']} | {b['anchor']} | {b['bd_rate']:+.1f} |" for b in clean_bd]
    bd = payload.get("bd_rate") or []
    if bd:
        lines += ["", "## BD-rate under loss", "",
                  "Bjøntegaard delta rate of ours against each baseline (bytes per frame vs PSNR over the RD "
                  "points below; negative = ours needs fewer bytes for the same PSNR; – where a curve's PSNR does not "
                  "rise with its bytes or the PSNR ranges do not overlap). A cubic fit can swing far between "
                  "sparse points: read it with rd_under_loss.png.", "",
                  "| method | anchor | loss % | BD-rate % |", "|---|---|---:|---:|"]
        lines += [f"| {b['method']} | {b['anchor']} | {100 * b['loss_rate']:g} | {_fmt(b['bd_rate'], '+.1f')} |"
                  for b in bd]
    rd_loss = payload.get("rd_under_loss") or []
    budgets = sorted({r["budget"] for r in rd_loss if r.get("budget") is not None})
    if budgets:
        lines += ["", "## Operating points", "",
                  "PSNR dB (share of fresh frames) per loss condition; baselines matched to each budget, ours at "
                  "its rate point nearest to it (its bytes beside its name, mean over the conditions).", ""]
        for budget in budgets:
            lines += ["", f"{budget:.0f} B/frame:", "", *operating_points(rd_loss, budget)]
    for budget in budgets:
        rows = [r for r in rd_loss if r.get("budget") == budget] + nearest_rate_points(rd_loss, budget)
        rows.sort(key=lambda r: (r["loss_rate"], r["method"]))
        lines += ["", f"## Matched to {budget:.0f} B/frame", "",
                  "Baselines matched to the budget; ours at its rate point nearest to it.", "",
                  *table(rows, BUDGET_TABLE)]
    return "\n".join(lines) + "\n"


def _by_method(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["method"], []).append(r)
    return out


def plot_quality(rows: list[dict], path: Path, title: str) -> None:
    """Quality, fresh frames and accuracy vs loss rate, one line per method."""
    panels = [("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("fresh_frames", "fresh frames"),
              ("freeze_ms_total", "time frozen (ms)")]
    if any(r["accuracy"] is not None or r.get("head_accuracy") is not None for r in rows):
        panels.append(("accuracy", "accuracy"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for method, rs in _by_method(rows).items():
        colour, marker, ls = methods.style(method)
        for ax, (key, label) in zip(axes[0], panels):
            lines = [(key, ls, method)] + ([("head_accuracy", ":", f"{method} (head)")] if key == "accuracy" else [])
            for k, style, name in lines:
                pts = [(100 * r["loss_rate"], r.get(k)) for r in rs if r.get(k) is not None]
                if pts:
                    ax.plot(*zip(*pts), color=colour, marker=marker, ls=style, ms=4, label=name)
            ax.set(xlabel="packet loss (%)", ylabel=label)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rd(points: list[dict], rows: list[dict], path: Path, title: str) -> None:
    """PSNR / SSIM vs payload bytes per frame at 0 % loss; curves from ``points``, run points from ``rows``."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, rs in _by_method(points).items():
        colour, marker, _ = methods.style(method)
        rs = sorted(rs, key=lambda r: r["bytes_per_frame"])
        for ax, key in zip(axes, ("psnr", "ssim")):
            ax.plot([r["bytes_per_frame"] for r in rs], [r[key] for r in rs], color=colour, marker=marker,
                    ms=3, lw=1, label=method)
    for method, rs in _by_method([r for r in rows if r["loss_rate"] == 0 and r["psnr"] is not None]).items():
        colour, marker, _ = methods.style(method)
        for ax, key in zip(axes, ("psnr", "ssim")):
            ax.scatter([r["bytes_per_frame"] for r in rs], [r[key] for r in rs], s=60, facecolors="none",
                       edgecolors=colour, label=f"{method} (this run)")
    for ax, label in zip(axes, ("PSNR (dB)", "SSIM")):
        ax.set(xlabel="payload bytes per frame", ylabel=label, xscale="log")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rd_under_loss(rows: list[dict], path: Path, title: str) -> None:
    """PSNR vs payload bytes per frame, one panel per loss condition, one curve per method (ours over its
    rate points, each baseline over the budgets)."""
    conditions = sorted({(r["loss_model"], r["loss_rate"], r["burst_len"] or 0.0) for r in rows})
    fig, axes = plt.subplots(1, len(conditions), figsize=(4.2 * len(conditions), 3.8), squeeze=False, sharey=True)
    for ax, (mode, rate, burst) in zip(axes[0], conditions):
        here = [r for r in rows if (r["loss_model"], r["loss_rate"], r["burst_len"] or 0.0) == (mode, rate, burst)]
        for method, rs in _by_method([r for r in here if r["psnr"] is not None]).items():
            colour, marker, ls = methods.style(method)
            rs = sorted(rs, key=lambda r: r["bytes_per_frame"])
            ax.plot([r["bytes_per_frame"] for r in rs], [r["psnr"] for r in rs], color=colour, marker=marker,
                    ls=ls, ms=4, lw=1, label=method)
        ax.set(xlabel="payload bytes per frame", xscale="log",
               title=f"{mode} {100 * rate:g} %" + (f", bursts of {burst:g}" if burst else ""))
        ax.grid(alpha=0.3, which="both")
        for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):  # 1000 2000 4000, not 2x10^3
            axis(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:e}"[0] in "124" else ""))
    axes[0][0].set_ylabel("PSNR (dB)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_strip(strip: dict, path: Path, count: int = 4) -> None:
    """A few evenly spaced frames, one row each: original then each method at the strip's loss rate."""
    reference = strip["reference"]
    shown = [m for m in methods.strip_methods() if m in strip["frames"]]
    n = len(reference)
    picks = sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(min(count, n))})
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0  # noqa: E731
    rows = [[to_t(reference[f])] + [to_t(strip["frames"][m][f]) for m in shown] for f in picks]
    pct = f"{100 * strip['rate']:g} % loss"
    plots.image_grid(rows, ["original"] + [f"{m} ({pct})" for m in shown], path)


def write_all(out: Path, payload: dict, strip: dict) -> None:
    """results.json, results.md and the three plots (the RD points are ``payload["rd"]``)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", payload)
    (out / "results.md").write_text(markdown(clean(payload)))
    cfg = payload["config"]
    rows = clean(payload["results"])
    title = f"{cfg['model']}, {cfg['loss']} loss, {cfg['frames']} frames at {cfg['size']}px"
    plot_quality(rows, out / "quality_vs_loss.png", title)
    plot_rd(clean(payload["rd"]), rows, out / "rd_curve.png", f"{title}: 0 % loss")
    plot_strip(strip, out / "strip.png")
    if payload.get("rd_under_loss"):
        plot_rd_under_loss(clean(payload["rd_under_loss"]), out / "rd_under_loss.png", f"{title}: RD under loss")
