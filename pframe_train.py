"""Train LRAE_VC_P, the P-frame codec, on clips: an I-frame from the (frozen) intra codec, then P-frames,
each decoded against the previous frame *as the receiver showed it*, with channel loss drawn per frame.

    python pframe_train.py --intra checkpoints/LRAE_RD.pth --data ../shared/data/video sample \\
        --seq-len 4 --crop 128 --batch-size 4 --drop-mode mixed --drops 16 --clip-grad 1 --channels-last
    python pframe_train.py --model-path runs/NNN-LRAE_VC_P/last.pth --resume ...          # as every trainer

Per training clip (T = ``--seq-len`` frames) and sample: one quality level q for the whole clip; frame 0
coded by the intra codec at q with a channel mask (``--drop-mode``/``--drops``, as autoencoder_train.py)
and decoded: the reference; frames 1..T-1 coded by the P codec against the reference at q, each with
its own mask (and with ``--whole-loss`` probability every channel lost), decoded, and the decode, rounded to
8 bits as a receiver shows it, becomes the next reference (detached: each P-step's gradient stays within
its frame). The P codec starts as the intra codec (models/pframe.py ``start_from_intra``). Loss: the mean over the
P-frames of lambda_q * 255^2 * MSE + bits per pixel (the likelihoods of the P latent). So the codec learns
to code against references degraded by loss and by its own earlier errors - the receiver's references; a
streaming sender codes against its mirror of them, equal to them once the feedback arrives (playback/inter.py).

Validation: mean PSNR of the P-frames of val clips at the top level, with nothing lost and with a quarter of
each frame's channels lost. At the end: LRAE_VC_P_final.pth (the I- and P-frames' learned tables in
``extra``: ``codec`` for the intra codec, ``p_codec`` for the P codec) and pframe_eval.json, the
rate (estimated from the likelihoods) and PSNR of I-frames alone vs an I-frame then P-frames, per level,
on the test clips.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from data import clip_splits, describe_split
from models import build_model, load_model
from models.base import as_shown
from models.rd_tables import learned_codec
from network.loss import TRAIN_MODES, sample_masks
from training.args import add_channel_loss_args, add_train_args
from training.engine import autocast, fit, run_main, setup, spaced
from training.objectives import rd_terms
from training.run import write_json
from utils import plots
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.metrics import psnr


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--intra", default=None, help="the intra codec's checkpoint (LRAE_RD with its learned tables)")
    p.add_argument("--model-args", default="{}",
                   help="JSON constructor arguments of LRAE_VC_P besides the intra codec (its transform sizes are "
                        "the intra's), e.g. '{\"lambdas\": [...]}'")
    p.add_argument("--seq-len", type=int, default=4, help="frames per training clip: one I-frame, then P-frames")
    p.add_argument("--clip-stride", type=int, default=2, help="frames between the starts of training clips")
    p.add_argument("--whole-loss", type=float, default=0.0,
                   help="probability that a P-frame loses every channel (a receiver repeats the last frame then, "
                        "playback/inter.py, so by default the P codec does not train on it)")
    p.add_argument("--eval-frames", type=int, default=30, help="frames per test video in the final evaluation")
    p.add_argument("--eval-videos", type=int, default=2, help="test videos in the final evaluation")
    add_train_args(p, epochs=20, batch_size=4, lr=5e-4)
    add_channel_loss_args(p, drops_help="max channels lost per frame (default: half of the latent channels)")
    p.set_defaults(crop=128, val_frames=16, val_every=2, drop_mode="mixed")
    args = p.parse_args(argv)
    if args.drop_mode not in TRAIN_MODES or args.seq_len < 2 or args.eval_frames < 2 or args.eval_videos < 1 \
            or not 0.0 <= args.whole_loss <= 1.0:
        raise SystemExit("error: need --seq-len and --eval-frames >= 2, --eval-videos >= 1, --whole-loss in [0, 1]")
    if (args.intra is None) == (args.model_path is None):
        raise SystemExit("error: give --intra (a new P codec over that intra codec) or --model-path (an LRAE_VC_P)")
    return args


def build(args):
    """(model, initial checkpoint or None): an LRAE_VC_P from --model-path, or new over --intra's weights."""
    if args.model_path:
        ckpt = load_checkpoint(args.model_path)
        try:
            return load_model(ckpt, expect="LRAE_VC_P"), ckpt
        except CheckpointError as e:
            raise CheckpointError(f"{args.model_path}: {e} (an intra checkpoint goes to --intra)") from None
    intra = load_model(args.intra)
    if intra.kind != "frame" or intra.levels < 2:
        raise CheckpointError(f"--intra {args.intra} holds a {intra.model_name}, not a codec with quality levels")
    model = build_model("LRAE_VC_P", intra=intra.model_name, intra_kwargs=intra.config, **json.loads(args.model_args))
    model.intra.load_state_dict(intra.state_dict(), strict=True)
    model.start_from_intra()  # the P codec starts as the trained intra codec, blind to the reference
    return model, None


@torch.no_grad()
def intra_frame(intra, x: torch.Tensor, q: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The receiver's I-frame: (decoded frame, bits per pixel estimated from the intra prior)."""
    was = intra.training
    intra.eval()
    out = intra(x, mask, quality=q)
    intra.train(was)
    bpp = -torch.log2(out["likelihoods"]).sum(dim=(1, 2, 3)) / (x.shape[-2] * x.shape[-1])
    return as_shown(out["x_hat"]), bpp


def train(args):
    env = setup(args)
    model, init_ckpt = build(args)
    model.intra.requires_grad_(False)
    c_i, c_p, levels = model.intra.latent_channels, model.latent_channels, model.levels
    max_drop = c_p // 2 if args.drops is None else args.drops
    if not 0 <= max_drop <= c_p:
        raise SystemExit(f"error: --drops {max_drop} is outside 0..{c_p}")
    for side in {args.crop, args.size}:
        model.check_size(side, side)
    split, train_ds, val_ds, test_clips = clip_splits(args.data or ["sample"], args.size, args.seed, args.seq_len,
                                                      args.clip_stride, args.crop, args.eval_videos,
                                                      args.eval_frames)
    optimizer = torch.optim.Adam(model.param_groups(), lr=args.lr)
    amp = autocast(env.device, args.amp)

    def step(net, batch, s):
        g = s.generator
        drop_now = s.ramp(max_drop)
        x = batch["x"].to(env.device)  # (B,T,3,H,W)
        b, t = x.shape[:2]
        q = env.shard(torch.randint(0, levels, (args.batch_size,), generator=g)).to(env.device)
        mask = env.shard(sample_masks(args.drop_mode, args.batch_size, c_i, round(drop_now * c_i / c_p), g))
        ref, _ = intra_frame(model.intra, x[:, 0], q, mask.to(env.device))
        total, logs = 0.0, {"psnr": 0.0, "bpp": 0.0}
        for f in range(1, t):
            mask = sample_masks(args.drop_mode, args.batch_size, c_p, drop_now, g)
            mask[torch.rand(args.batch_size, generator=g) < args.whole_loss] = 0.0
            with amp:
                out = net(x[:, f], ref, env.shard(mask).to(env.device), quality=q)
            loss, frame_logs = rd_terms(out, x[:, f])
            total = total + loss / (t - 1)
            for k in logs:
                logs[k] += frame_logs[k] / (t - 1)
            ref = as_shown(out["x_hat"].detach())  # the next reference, as a receiver shows it
        return total, {"max_drop": drop_now, **logs}

    val_clips = [item["x"] for item in spaced(val_ds, max(2, args.val_frames // args.seq_len))]

    def validate(model):
        """Mean PSNR of the P-frames at the top level, nothing lost and a quarter of the channels lost."""
        res = {lost: chain_psnr(model, val_clips, levels - 1, lost, args.seed, env.device, amp)[0]
               for lost in (0, c_p // 4)}
        score = sum(res.values()) / len(res)
        text = " ".join(f"{k}lost:{v:.2f}dB" for k, v in res.items())
        return score, {"val_mean_psnr": score, "val": {str(k): v for k, v in res.items()}}, f"val P-frames {text}"

    run = fit(args, model, optimizer, train_ds, step, validate, env=env, name="LRAE_VC_P",
              files={"split.json": describe_split(split)}, curriculum=args.curriculum,
              curriculum_start=args.drops_from)
    if env.is_main:
        finish(args, model, run, test_clips, env.device, amp)
    env.barrier()
    return run.dir


@torch.no_grad()
def chain_psnr(model, clips, quality: int, lost: int, seed: int, device, amp) -> tuple[float, float]:
    """(mean PSNR, mean bpp) of the P-frames of ``clips`` ((T,3,H,W) each) coded as I P P ... at ``quality``,
    every frame losing ``lost`` random channels (seeded), each decoded against the previous decode."""
    was = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    scores, rates = [], []
    for clip in clips:
        x = clip.to(device)
        q = torch.full((1,), quality, dtype=torch.long, device=device)
        ref, _ = intra_frame(model.intra, x[:1], q, torch.ones(1, model.intra.latent_channels, device=device))
        for f in range(1, len(x)):
            mask = torch.ones(1, model.latent_channels)
            mask[0, torch.randperm(model.latent_channels, generator=g)[:lost]] = 0.0
            with amp:
                out = model(x[f:f + 1], ref, mask.to(device), quality=q)
            ref = as_shown(out["x_hat"])
            scores.append(float(psnr(ref, x[f:f + 1])[0]))
            rates.append(float(-torch.log2(out["likelihoods"]).sum() / (x.shape[-2] * x.shape[-1])))
    model.train(was)
    return sum(scores) / len(scores), sum(rates) / len(rates)


@torch.no_grad()
def intra_only(model, clips, quality: int, device) -> tuple[float, float]:
    """(mean PSNR, mean bpp) of the same frames (all but the first of each clip) coded as I-frames."""
    scores, rates = [], []
    for clip in clips:
        x = clip[1:].to(device)
        q = torch.full((len(x),), quality, dtype=torch.long, device=device)
        x_hat, bpp = intra_frame(model.intra, x, q, torch.ones(len(x), model.intra.latent_channels, device=device))
        scores += psnr(x_hat, x).tolist()
        rates += bpp.tolist()
    return sum(scores) / len(scores), sum(rates) / len(rates)


def finish(args, model, run, test_clips, device, amp):
    """Final weights with both codecs' learned tables, and the I-only vs I+P rate and PSNR per level."""
    model.eval()
    extra = {"codec": learned_codec(model.intra), "p_codec": learned_codec(model)}
    written = run.save_final(model, "LRAE_VC_P_final.pth", extra=extra)
    rows = []
    for q in range(model.levels):
        i_psnr, i_bpp = intra_only(model, test_clips, q, device)
        p_psnr, p_bpp = chain_psnr(model, test_clips, q, 0, args.seed, device, amp)
        rows.append({"quality": q, "intra_psnr": i_psnr, "intra_bpp": i_bpp, "p_psnr": p_psnr, "p_bpp": p_bpp})
    write_json(run.dir / "pframe_eval.json", {"frames": [int(c.shape[0]) for c in test_clips], "rows": rows})
    plots.loss_curve(run.metrics.read(), run.dir / "loss_curve.png")
    lines = [f"run folder: {run.dir}", f"final weights: {' and '.join(map(str, written))}",
             "test clips, nothing lost (bpp estimated from the priors):  level  I-only dB @ bpp   I+P dB @ bpp"]
    lines += [f"  {r['quality']:>5}  {r['intra_psnr']:7.2f} @ {r['intra_bpp']:.3f}   "
              f"{r['p_psnr']:7.2f} @ {r['p_bpp']:.3f}" for r in rows]
    print("\n".join(lines))


def main(argv=None):
    return run_main(train, parse_args(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main(sys.argv[1:])
