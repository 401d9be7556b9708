"""Rate-distortion curves for evaluate.py, at 0 % loss and under loss, and BD-rates between them.

- :func:`rd_points`: 0 % loss; ours at each of its rate points, each selected baseline over its ``sweep``.
- :func:`rd_under_loss` (``evaluate.py --bitrates``): every baseline matched to each byte budget
  (:func:`parse_bitrates`: bytes per frame, or kbps at an fps) and ours at each of its rate points, each
  under each loss condition with ONE draw per condition shared by every method and rate point.
- :func:`bd_rates`: BD-rate (utils.metrics.bd_rate) of ours against each baseline per loss condition;
  :func:`bd_rates_clean` the same at 0 % loss over the RD curves of :func:`rd_points`.

Ours' rate points come from the ``rate_points`` hook of its entry in evaluation/methods.py (one per
quantiser bit depth, or per quality level of a model with learned tables); methods, FEC, sweeps and
styles come from that registry too.
"""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from evaluation import methods
from evaluation.methods import make_baseline
from evaluation.packets import as_frames
from evaluation.runner import (
    DEFAULT_FPS,
    DRAW_SLOTS,
    OURS,
    InterOptions,
    OurCodec,
    OurInterCodec,
    from_baseline,
    is_inter,
    loss_fields,
    make_draws,
    our_runs,
    quality,
    score,
)
from network.loss import LossModel
from utils import metrics


def rd_points(model, ckpt: dict | None, frames: torch.Tensor, bits: list[int], baselines: list[str],
              progress: bool = True, inter: InterOptions | None = None) -> list[dict]:
    """Rate-distortion points at 0 % loss: ours at each of its rate points (the registry's ``rate_points``
    hook: quantiser ``bits`` or quality levels; an inter codec's intra codec as "ours" and its I/P stream as
    "ours-p"), and each selected baseline with a ``sweep`` over its settings."""
    reference = as_frames(frames)
    clean = torch.ones(len(reference), DRAW_SLOTS)
    jobs = []
    opts = inter or InterOptions()
    for params, c in methods.OURS.rate_points(model, ckpt, bits):
        q = params.get("quality", 0)
        jobs.append((OURS, params, lambda c=c, q=q: OurCodec(frame_model(model), c, frames, quality=q).run(clean)))
        if is_inter(model):
            jobs.append((methods.OURS_P.name, params, lambda c=c, q=q: OurInterCodec(
                model, c, frames, q, opts.gop, opts.feedback, opts.feedback_delay, opts.reference).clean))
    for m in (methods.METHODS[b] for b in baselines):
        jobs += [(m.name, {m.sweep_key: s}, lambda m=m, s=s: from_baseline(make_baseline(m.name, reference, setting=s)(
            clean))) for s in m.sweep]
    points = []
    h, w = reference.shape[1:3]
    for method, params, job in tqdm(jobs, desc="RD curves", disable=not progress, leave=False):
        shown = job()
        q = quality(shown.frames, reference)
        points.append({"method": method, **params, "bytes_per_frame": float(shown.nbytes.mean()),
                       "bpp": float(metrics.bpp(float(shown.nbytes.mean()), h, w)), "psnr": q["psnr"],
                       "ssim": q["ssim"]})
    return points


def frame_model(model):
    """The frame codec of ``model``: itself, or an inter codec's intra codec."""
    return model.intra if is_inter(model) else model


def parse_bitrates(text: str, fps: float = DEFAULT_FPS) -> list[float]:
    """``--bitrates``: "1000,2000,4000" (payload bytes per frame) or "kbps:240,480" (kilobits per second at
    ``fps``; the prefix may also mark single values: "1000,kbps:480") -> sorted bytes per frame; "none" -> []."""
    text = text.strip()
    if text in ("", "none"):
        return []
    unit_all = text.startswith("kbps:")
    out = []
    for token in (t.strip() for t in text.removeprefix("kbps:").split(",") if t.strip()):
        kbps = unit_all or token.startswith("kbps:")
        try:
            value = float(token.removeprefix("kbps:"))
        except ValueError:
            raise ValueError(f"--bitrates must be bytes per frame or kbps:N values, got {text!r}") from None
        out.append(value * 1000.0 / 8.0 / fps if kbps else value)
    if not out or any(not math.isfinite(v) or v <= 0 for v in out):
        raise ValueError(f"--bitrates must be positive, got {text!r}")
    return sorted(set(out))


def rd_under_loss(model, ckpt: dict | None, temporal, frames: torch.Tensor, *,
                  losses: list[tuple[str, float, LossModel]], budgets: list[float], baselines: list[str], rate_spec,
                  seed: int, our_packets: int, fps: float = DEFAULT_FPS, progress: bool = True,
                  inter: InterOptions | None = None) -> list[dict]:
    """Every method at every rate point under every loss condition of ``losses`` ((label, rate, loss model),
    :func:`evaluation.runner.loss_points`): rows as :func:`score`'s plus ``budget`` (the baselines' target
    bytes per frame; None for ours).

    Ours runs at each point of its registry ``rate_points`` hook (``rate_spec``: quantiser bits, or every
    quality level), with each fill (:func:`evaluation.runner.our_runs`: an inter codec also as I/P stream);
    each baseline is matched to each of ``budgets``. Per condition ONE draw (:func:`make_draws`, tail
    deadlines counted from ``our_packets``) is handed to every method and rate point.
    """
    reference = as_frames(frames)
    jobs = [(None, fill, run) for params, codec in methods.OURS.rate_points(model, ckpt, rate_spec)
            for fill, run in our_runs(model, codec, frames, temporal, params.get("quality", 0), inter).items()]
    jobs += [(b, None, make_baseline(m, reference, target_bytes=b)) for b in budgets for m in tqdm(
        baselines, desc=f"encode baselines at {b:.0f} B/frame", disable=not progress, leave=False)]
    rows = []
    for label, rate, loss_model in tqdm(losses, desc="RD under loss", disable=not progress):
        draws = make_draws(loss_model, len(reference), seed, our_packets)
        loss = loss_fields(label, rate, loss_model)
        for budget, fill, job in jobs:
            shown = job.run(draws, fill) if fill else from_baseline(job(draws))
            rows.append({**score(shown, reference, loss, fps=fps), "budget": budget})
    return rows


def bd_rates_clean(points: list[dict], anchors: list[str]) -> list[dict]:
    """BD-rates at 0 % loss over the RD curves of :func:`rd_points` (ours at every rate point, each baseline
    over its whole sweep), the usual codec comparison."""
    return bd_rates([{**p, "loss_model": "none", "loss_rate": 0.0, "burst_len": None} for p in points], anchors)


def bd_rates(rows: list[dict], anchors: list[str]) -> list[dict]:
    """BD-rate (:func:`utils.metrics.bd_rate`, bytes per frame vs PSNR) of each of our methods against each
    baseline in ``anchors``, per loss condition of ``rows`` (from :func:`rd_under_loss`): negative = ours
    needs fewer bytes for the same PSNR. ``bd_rate`` is None when a curve has fewer than 2 points, its PSNR
    does not rise with its bytes (common under loss), or the PSNR ranges do not overlap."""
    curves: dict[tuple, dict[str, list[tuple[float, float]]]] = {}
    for r in rows:
        if r["psnr"] is not None:
            key = (r["loss_model"], r["loss_rate"], r["burst_len"])
            curves.setdefault(key, {}).setdefault(r["method"], []).append((r["bytes_per_frame"], r["psnr"]))
    out = []
    for (mode, rate, burst), by_method in curves.items():
        for ours in (m.name for m in methods.of_kind("ours") if m.name in by_method):
            for anchor in (a for a in anchors if a in by_method and a != ours):
                a, t = by_method[anchor], by_method[ours]
                value = None
                if len(a) >= 2 and len(t) >= 2:
                    value = metrics.bd_rate(*zip(*a), *zip(*t))
                out.append({"method": ours, "anchor": anchor, "loss_model": mode, "loss_rate": rate,
                            "burst_len": burst, "bd_rate": value})
    return out
