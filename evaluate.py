"""Evaluate our codec against JPEG, WebP and H.264 (with and without FEC) under the same packet loss.

    python evaluate.py --model_path runs/ship-LRAE_VC/last.pth --out runs/eval-lrae     # carphone, 60 frames
    python evaluate.py --model_path CKPT --temporal conv_lstm_ae.pth --loss burst --rates 0,0.1,0.3 --out DIR
    python evaluate.py --model_path CKPT --loss wifi --out DIR          # one preset (or random:0.3, trace:FILE)
    python evaluate.py --model_path CKPT --loss wifi cellular lossy-wifi congested random:0.3 --out DIR
    python evaluate.py --model_path CKPT --data synthetic --classifier runs/001-SimpleCNN/SimpleCNN_final.pth --out DIR
    python evaluate.py --model_path CKPT --data clip.mp4 --max-frames 0 --baselines jpeg,h264 --out DIR
    python evaluate.py --model_path CKPT --bitrates 1000,2000,4000 --rates 0,0.1,0.3 --out DIR   # RD under loss
    python evaluate.py --model_path CKPT --data clips/ --per-clip --loss wifi --out DIR        # mean over clips

Frames: the TEST split of ``--data`` (split_videos with ``--seed``; the default "sample" gives the
carphone clip), or every frame of a single video, at ``--size`` x ``--size``, at most ``--max-frames``
(0 = all), played as one stream; with ``--per-clip`` every video of ``--data`` (a folder of clips: no
split) is its own stream, and the results are the mean over the clips, each clip weighing the same
(``per_clip`` in results.json holds each clip's rows). Ours runs the exact wire path offline, frame by frame: encoder ->
quantiser -> entropy coder -> packets (codec/packetize.py) -> packet loss -> entropy decoding -> fill ->
decoder (playback.conceal, the receiver's path), with the temporal state carried across frames. Per loss
rate ONE per-packet-slot draw (network.loss.draws, seeded by ``--seed``; row f is what sender_encode.py
--loss SPEC --seed S drops in frame f) is shared by every method: frame f's packets use slots 0..k-1 of
row f, ours channel 0 first. ``--loss`` is a family swept over ``--rates`` (random, ge, burst, tail) or
one spec at its own rate (random:0.3, wifi, grace:0.3,3, trace:FILE; see network/loss/models.py).
Methods: ``ours`` (lost channels zero-filled, a frame with nothing received repeats the last),
``ours+convlstm`` (with ``--temporal``, or a conv_lstm_ae ``--model_path``: the same packets, filled by
the ConvLSTM), ``jpeg``/``webp`` at the quality whose mean bytes/frame is closest to ours,
``jpeg-best`` (the best JPEG quality within our bytes, per loss rate), ``h264`` (low delay, no
B-frames, fixed GOP) and ``h264-fec20``/``h264-fec50`` (packet-level FEC), all at 1200 B per packet;
a frame that cannot be decoded is not displayed (the previous one stays). See evaluation/runner.py.

Writes to ``--out``: results.json = {"config": {...}, "results": [{"method", "loss_model", "loss_rate",
"burst_len", "bytes_per_frame", "packets_per_frame", "bpp", "psnr", "ssim", "ms_ssim", "ssim_db", "fresh_frames",
"freeze_ms_total", "freeze_ms_p95", "accuracy", "head_accuracy", "encode_ms", "decode_ms", "params"}], "rd": [...],
"rd_under_loss": [rows as "results" plus "budget"], "bd_rate": [{"method", "anchor", "loss_model", "loss_rate",
"burst_len", "bd_rate"}]} (null where not measured;
with ``--classifier`` a row "original" per rate holds its accuracy on the uncompressed frames),
results.md (the same as a table), quality_vs_loss.png, rd_curve.png (0 % loss: ours per ``--rd-bits``, or
per quality level of a model with quality levels and learned tables (LRAE_RD, evaluated at ``--quality``),
the baselines over their quality range) and strip.png (frames at about 30 % loss). With ``--bitrates``
(payload bytes per frame, or ``kbps:N`` at ``--fps``) every baseline is also matched to each budget and
ours runs at each of its rate points (``--rd-bits``), under every loss rate: ``rd_under_loss`` rows,
``rd_under_loss.png`` (one panel per loss condition), BD-rate of ours against each baseline per loss
condition (``bd_rate``, %, negative = ours needs fewer bytes for the same PSNR) and a table per budget
in results.md. Freeze times are in ms at ``--fps`` (a freeze = a run of frames not showing their own
decode). The same command
gives the same results.json except the timing fields ``encode_ms`` and ``decode_ms`` (ms per frame,
measured in this run, on ``--threads`` threads).
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from codec.packetize import check_quality
from data import DataError
from evaluation import rd
from evaluation import runner as evaluation
from evaluation.methods import METHODS, groups
from evaluation.packets import MTU
from evaluation.report import write_all
from models.stack import load_stack
from network.loss import DEFAULT_BURST_LEN
from playback.inter import REFERENCES
from training.engine import prepare_run_dir, safe_name
from utils.checkpoint import CheckpointError

log = logging.getLogger("evaluate")


def int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip() and t.strip() != "none"]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-path", "--model_path", required=True,
                   help="checkpoint of our frame codec (or of conv_lstm_ae: its frame AE, filled by its ConvLSTM; or "
                        "of an inter codec, LRAE_VC_P: its intra codec as ours, its I/P stream as ours-p)")
    p.add_argument("--temporal", default=None, help="conv_lstm_ae checkpoint for the ours+convlstm fill")
    p.add_argument("--data", nargs="+", default=["sample"],
                   help="data sources (data package specs); the test split is evaluated, or all of one video")
    p.add_argument("--size", type=int, default=224, help="frames: short side resized to this, center-cropped square")
    p.add_argument("--max-frames", "--max_frames", type=int, default=60,
                   help="evaluate at most this many frames, shared over the test videos (0 = all)")
    p.add_argument("--loss", nargs="+", default=["random"],
                   help="packet loss, one or several: a family swept over --rates (random, ge, burst, tail) or a "
                        "spec (random:P, ge:P,L, tail:K, grace:P,N, trace:FILE[,K], wifi, cellular, lossy-wifi, "
                        "congested; network/loss/models.py), the same slots sender_encode.py --loss drops")
    p.add_argument("--burst-len", type=float, default=DEFAULT_BURST_LEN, help="mean burst length (ge/burst sweep)")
    p.add_argument("--rates", default="0,0.05,0.1,0.2,0.3,0.5", help="packet loss rates")
    p.add_argument("--baselines", default="jpeg,webp,h264,h264-fec",
                   help="groups " + ", ".join(f"{g} ({' + '.join(ms)})" for g, ms in groups().items())
                        + ", exact method names, or none (evaluation/methods.py)")
    p.add_argument("--classifier", default=None, help="classifier checkpoint (classifier_train.py) for accuracy")
    p.add_argument("--bits", type=int, default=None,
                   help="quantisation bits of our codec (default: the checkpoint's calibration, else 4)")
    p.add_argument("--rd-bits", type=int_list, default="2,3,4,5,6",
                   help="quantiser bits of our RD points at 0 %% loss; a model with learned tables (LRAE_RD) runs "
                        "each of its quality levels instead ('none': skip the RD curves)")
    p.add_argument("--quality", type=int, default=None,
                   help="quality level of a model with levels (LRAE_RD) in the loss runs (default: the top one)")
    p.add_argument("--bitrates", default="none",
                   help="budgets of the RD curves under loss: payload bytes per frame (1000,2000,4000) or kbps:N at "
                        "--fps; each baseline is matched to each, ours runs at each --rd-bits ('none': skip)")
    p.add_argument("--fps", type=float, default=evaluation.DEFAULT_FPS,
                   help="frame rate of the clip: freeze times in ms and kbps budgets")
    p.add_argument("--split", choices=evaluation.EVAL_SPLITS, default=None,
                   help="which videos of --data: the split of a training run on the same --data and --seed "
                        "(held-out = val + test), or all; default: test (all for one video, or with --per-clip)")
    p.add_argument("--per-clip", action="store_true",
                   help="evaluate every video of --data as its own stream (no split: the data is the test set); "
                        "results are the mean over clips, each clip's rows in per_clip")
    p.add_argument("--gop", type=int, default=0,
                   help="an inter codec's (LRAE_RD_P, LRAE_VC_P) I-frame period in its ours-p stream (0: only the "
                        "first frame)")
    p.add_argument("--feedback-delay", type=int, default=1,
                   help="frames before the receiver's feedback on a frame reaches the sender (ours-p)")
    p.add_argument("--no-feedback", action="store_true",
                   help="ours-p without feedback: the sender assumes everything arrives, only I-frames resync")
    p.add_argument("--reference", choices=REFERENCES, default="auto",
                   help="what ours-p's P-frames are coded against: the sender's last state (latest), the newest one "
                        "the feedback confirmed (acked), or acked while 8 %% of the channels are lost or more (auto)")
    p.add_argument("--strip-rate", type=float, default=0.3, help="loss rate of strip.png (nearest evaluated)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the synthetic data and the loss draws")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", "--out-dir", "--out_dir", default=None,
                   help="output folder (default: runs/NNN-eval-<model>)")
    p.add_argument("--overwrite", action="store_true", help="write into an --out folder that already has results")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (DataError, CheckpointError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None


def load_models(args):
    """(frame model, wire codec, temporal model or None, checkpoint dict, classifier or None, its checkpoint)."""
    st = load_stack(args.model_path, args.temporal, args.classifier, bits=args.bits)
    return st.model, st.codec, st.temporal, st.ckpt, st.classifier, st.classifier_ckpt


def check_leak(seq, cls_ckpt) -> int:
    """Evaluated videos the classifier was trained on (by name; classifier_train.py stores them)."""
    trained = set(((cls_ckpt or {}).get("extra") or {}).get("train_videos") or [])
    seen = sorted(set(seq.videos) & trained)
    if seen:
        log.warning("the classifier was trained on %d of the evaluated videos (%s...): its accuracy is optimistic; "
                    "evaluate on the data and --seed it was trained with", len(seen), ", ".join(seen[:3]))
    return len(seen)


def evaluate_clip(args, model, codec, temporal, ckpt, classifier, seq, rates, baselines, budgets) -> dict:
    """One stream: the runs per loss condition, the RD points at 0 % loss and (``budgets``) under loss."""
    inter = evaluation.InterOptions(args.gop, not args.no_feedback, args.feedback_delay, args.reference)
    result = evaluation.evaluate_sequence(model, codec, temporal, seq, mode=args.loss, rates=rates,
                                          baselines=baselines, seed=args.seed, burst_len=args.burst_len,
                                          classifier=classifier, strip_rate=args.strip_rate, fps=args.fps,
                                          quality=args.quality, inter=inter)
    result["rd"] = rd.rd_points(model, ckpt, seq.frames, args.rd_bits, baselines, inter=inter)
    result["rd_under_loss"] = rd.rd_under_loss(
        model, ckpt, temporal, seq.frames, losses=result["losses"], budgets=budgets,
        baselines=baselines, rate_spec=args.rd_bits, seed=args.seed, our_packets=result["our_packets"],
        fps=args.fps, inter=inter) if budgets else []
    return result


def run(args):
    torch.set_num_threads(max(1, args.threads))
    rates = evaluation.parse_rates(args.rates)
    if args.fps <= 0:
        raise SystemExit(f"error: --fps must be > 0, got {args.fps}")
    budgets = rd.parse_bitrates(args.bitrates, args.fps)
    baselines = evaluation.parse_baselines(args.baselines)
    evaluation.loss_points(args.loss, rates, 1, args.burst_len)  # a bad --loss fails before any work
    if args.max_frames < 0 or args.size < 8:
        raise SystemExit(f"error: need --max-frames >= 0 and --size >= 8, got {args.max_frames}, {args.size}")
    if args.gop < 0 or args.feedback_delay < 0:
        raise SystemExit(f"error: need --gop >= 0 and --feedback-delay >= 0, got {args.gop}, {args.feedback_delay}")
    model, codec, temporal, ckpt, classifier, cls_ckpt = load_models(args)
    args.quality = check_quality(codec.levels - 1 if args.quality is None else args.quality, codec)
    try:
        model.check_size(args.size, args.size)
    except ValueError as e:
        raise SystemExit(f"error: {e} (--size)") from None
    odd = [m for m in baselines if METHODS[m].even_size]
    if odd and args.size % 2:
        raise SystemExit(f"error: {', '.join(odd)} need an even --size, got {args.size}")
    if args.per_clip:
        seqs = evaluation.load_clips(args.data, args.size, args.seed, args.max_frames or None, args.split or "all")
    else:
        seqs = [evaluation.load_sequence(args.data, args.size, args.seed, args.max_frames or None,
                                         args.split or "auto")]
    overlap = 0
    if classifier is not None:
        for seq in seqs:
            evaluation.classifier_targets(seq, classifier)  # labels and class names checked before any work
            overlap += check_leak(seq, cls_ckpt)
    out = prepare_run_dir(args.out, args.overwrite, safe_name(f"eval-{model.model_name}"))
    clips = []
    for seq in seqs:
        log.info("evaluating %d frames of %s (%s split) at %dx%d", len(seq.frames), ", ".join(seq.videos),
                 seq.split, args.size, args.size)
        clips.append(evaluate_clip(args, model, codec, temporal, ckpt, classifier, seq, rates, baselines, budgets))
    result = clips[0]
    rows, rd_clean, rd_loss = result["rows"], result["rd"], result["rd_under_loss"]
    if len(clips) > 1:  # the mean over clips, each clip weighing the same; the clips' own rows in "per_clip"
        rows, rd_clean, rd_loss = (evaluation.mean_rows([c[key] for c in clips])
                                   for key in ("rows", "rd", "rd_under_loss"))
    rates = result["rates"]  # one spec (wifi, random:0.3, ...): its own rate
    videos = [v for seq in seqs for v in seq.videos]
    config = {
        "model_path": args.model_path, "model": model.model_name, "model_kwargs": model.config,
        "temporal": args.temporal, "temporal_fill": temporal is not None, "classifier": args.classifier,
        "classifier_overlap_videos": overlap, "data": args.data, "split": seqs[0].split, "videos": videos,
        "per_clip": args.per_clip, "frames": sum(len(seq.frames) for seq in seqs), "size": args.size,
        "max_frames": args.max_frames, "loss": " ".join(args.loss),
        "burst_len": args.burst_len if {"burst", "ge"} & set(args.loss) else None, "rates": rates,
        "baselines": baselines,
        "methods": list(dict.fromkeys(r["method"] for r in rows)), "bits": codec.bits,
        "quant_mode": ("calibrated", "per-frame", "learned")[codec.mode], "quality": args.quality,
        "rd_bits": args.rd_bits, "seed": args.seed,
        "packet_payload": MTU, "draw_slots": evaluation.DRAW_SLOTS,
        "target_bytes": float(sum(c["target_bytes"] for c in clips) / len(clips)),
        "our_packets": max(c["our_packets"] for c in clips), "fps": args.fps, "bitrates": budgets,
        "threads": args.threads, "timing_fields": ["encode_ms", "decode_ms"],
        "inter": {"gop": args.gop, "feedback": not args.no_feedback, "feedback_delay": args.feedback_delay,
                  "reference": args.reference}
        if evaluation.is_inter(model) else None,
    }
    anchors = [*baselines, evaluation.OURS] if evaluation.is_inter(model) else baselines  # ours-p vs its intra
    payload = {"config": config, "results": rows, "rd": rd_clean, "rd_under_loss": rd_loss,
               "bd_rate_clean": rd.bd_rates_clean(rd_clean, anchors), "bd_rate": rd.bd_rates(rd_loss, anchors)}
    if len(clips) > 1:
        payload["per_clip"] = [{"clip": seq.videos[0], "frames": len(seq.frames), "results": c["rows"],
                                "rd_under_loss": c["rd_under_loss"],
                                "bd_rate": rd.bd_rates(c["rd_under_loss"], anchors)} for seq, c in zip(seqs, clips)]
    write_all(out, payload, result["strip"])
    print(f"results: {out / 'results.json'} (table: {out / 'results.md'})")
    for cond in dict.fromkeys((r["loss_model"], r["loss_rate"]) for r in rows):  # each condition once, in order
        at = [r for r in rows if (r["loss_model"], r["loss_rate"]) == cond and r["psnr"] is not None]
        print(f"loss {cond[0]} {100 * cond[1]:g} %: " + "  ".join(f"{r['method']} {r['psnr']:.2f} dB" for r in at))
    for b in payload["bd_rate_clean"]:
        value = "n/a" if b["bd_rate"] is None else f"{b['bd_rate']:+.1f} %"
        print(f"BD-rate {b['method']} vs {b['anchor']} at 0 % loss (RD curves): {value}")
    for b in payload["bd_rate"]:
        value = "n/a" if b["bd_rate"] is None else f"{b['bd_rate']:+.1f} %"
        print(f"BD-rate {b['method']} vs {b['anchor']} at {100 * b['loss_rate']:g} % {b['loss_model']} loss: {value}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
