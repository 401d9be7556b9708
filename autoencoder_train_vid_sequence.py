"""Train conv_lstm_ae: a frame autoencoder plus a ConvLSTM that fills lost latent channels over time.

The seed's commands, in this order (embedded sample data; defaults sized for minutes on 2 CPU cores)::

    python autoencoder_train_vid_sequence.py --model conv_lstm_ae
    python autoencoder_train_vid_sequence.py --model conv_lstm_ae \\
        --model_path conv_lstm_ae_final_weights.pth --epochs 25 --drops 12

The first trains on clips with nothing lost (``--drops`` defaults to 0 here, unlike autoencoder_train.py):
the frame AE (PNC16 unless ``--ae``/``--ae_path``) learns the data; the ConvLSTM has nothing to fill yet.
It writes ``conv_lstm_ae_final_weights.pth`` in its run folder and, without ``--out-dir``, in the working
directory. The second continues from that file with up to 12 of 16 channels lost per frame and writes
``conv_lstm_ae_dropUpTo_12_features_final_weights.pth`` (the prototype's name, so its input survives).

CPU defaults (the prototype's full run in brackets): clips of T=8 frames [20] every 8 frames [1],
batch 4 [32], 112x112 training crops of 224 frames [224], pixel loss on 1 frame per clip [all],
10 epochs [28], bf16 autocast; validation every 5 epochs on 2 clips at the crop size, the final
evaluation on the first 8 frames of each test video at 224. A full run::

    python autoencoder_train_vid_sequence.py --model conv_lstm_ae --ae_path PNC16_final_w_taildrops.pth \\
        --drops 12 --drop-mode tail --seq-len 20 --clip-stride 2 --batch-size 32 --crop 224 --pixel-frames 0 \\
        --epochs 28 --eval-frames 60 --eval-videos 10 --data /data/ucf
    torchrun --standalone --nproc_per_node=4 autoencoder_train_vid_sequence.py --model conv_lstm_ae --drops 12 ...
    SCRIPT=autoencoder_train_vid_sequence.py sbatch --gpus-per-node=4 slurm/train_1node.sbatch --model conv_lstm_ae

Training loss: pixel MSE over every frame of the clip (``--pixel-weight``) plus ``--latent-weight`` x the
MSE of the filled latent against the sent one on the lost channels, divided by each channel's variance.
Losses are drawn per sample and per frame (``--drop-mode``, ``--pattern``; evaluation/temporal.py).
At the end: temporal_eval.json/png on the test split (zero-fill vs copy-previous vs ConvLSTM, per loss
level and temporal pattern) and the run folder files of training/engine.py.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from codec.quant import DEFAULT_BITS, calibrate, training_quantizer
from data import clip_splits, describe_split
from evaluation import temporal as temporal_eval
from models import build_model, kind_of, load_model, model_names
from models.rd_tables import learned_codec
from training.args import add_channel_loss_args, add_train_args
from training.engine import autocast, fit, run_main, setup, spaced
from training.run import write_json
from utils import plots
from utils.checkpoint import CheckpointError, load_checkpoint

VIDEO_MODELS = model_names("temporal")
EVAL_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 0.875)  # of 16 channels: 0, 4, 8, 12, 14 lost


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, choices=VIDEO_MODELS, help="registry name")
    p.add_argument("--ae", default="PNC16", choices=model_names("frame"), help="frame autoencoder inside the model")
    p.add_argument("--ae-path", "--ae_path", default=None,
                   help="initialise the frame AE from this frame checkpoint (its model name sets --ae)")
    p.add_argument("--freeze-ae", action="store_true", help="train only the ConvLSTM (default: fine-tune both)")
    p.add_argument("--ae-lr-scale", type=float, default=1.0, help="learning rate of the frame AE relative to --lr")
    p.add_argument("--model-args", default="{}", help="JSON constructor arguments, e.g. '{\"hidden\": 48}'")
    p.add_argument("--bidirectional", action="store_true", help="bidirectional ConvLSTM (offline evaluation only)")
    p.add_argument("--seq-len", "--seq_len", type=int, default=8, help="frames per training clip (T)")
    p.add_argument("--clip-stride", type=int, default=8, help="frames between the starts of training clips")
    p.add_argument("--hold-prob", type=float, default=0.25,
                   help="fraction of training clips made still (every frame = the first): static scenes, "
                        "where copy-previous is right, which a moving training video never shows")
    p.add_argument("--pattern", choices=temporal_eval.TRAIN_PATTERNS, default="mixed",
                   help="lossy frames in training: iid (every frame), one burst of consecutive frames, "
                        "or mixed (each clip one of the two)")
    p.add_argument("--bursts", type=int_list, default=list(temporal_eval.BURSTS),
                   help="burst lengths n of consecutive lossy frames (training and evaluation)")
    p.add_argument("--gap", type=int, default=temporal_eval.GAP, help="clean frames before each evaluation burst")
    p.add_argument("--pixel-weight", type=float, default=1.0, help="weight of the pixel MSE")
    p.add_argument("--latent-weight", type=float, default=0.1,
                   help="weight of the variance-normalised latent MSE on lost channels")
    p.add_argument("--pixel-frames", type=int, default=1,
                   help="frames per clip decoded for the pixel loss, drawn per step (0 = all; the decoder "
                        "dominates the cost, the ConvLSTM always runs over the whole clip)")
    p.add_argument("--eval-frames", type=int, default=8, help="frames per test video in the final evaluation")
    p.add_argument("--eval-videos", type=int, default=2,
                   help="test videos in the final evaluation (evenly spaced over the test split)")
    p.add_argument("--eval-levels", type=int_list, default=None,
                   help="lost channels evaluated (default 0, 1/4, 1/2, 3/4, 7/8 of the channels)")
    add_train_args(p, epochs=10, batch_size=4, lr=1e-3)
    add_channel_loss_args(p, drops_help="max channels lost per frame (0: no loss, the seed's first command)")
    p.set_defaults(drops=0, crop=112, val_frames=16, val_every=5, drop_mode="mixed")
    return p.parse_args(argv)


def build_data(args):
    """(split, training clips, val clips, test clips) of ``--data``: data.clip_splits with this script's flags."""
    return clip_splits(args.data or ["sample"], size=args.size, seed=args.seed, length=args.seq_len,
                       stride=args.clip_stride, crop=args.crop, eval_videos=args.eval_videos,
                       eval_frames=args.eval_frames)


def build(args):
    """(model, initial checkpoint or None): the model from --model_path (architecture from the checkpoint)
    or new, with --ae_path weights in its frame AE."""
    if args.model_path and args.ae_path:
        raise SystemExit("error: give --model_path (a whole conv_lstm_ae) or --ae_path (a frame AE), not both")
    if args.model_path:
        ckpt = load_checkpoint(args.model_path)
        try:
            model = load_model(ckpt, expect=args.model)
        except CheckpointError as e:
            raise CheckpointError(f"{args.model_path}: {e} (a frame AE checkpoint goes to --ae_path)") from None
        if args.bidirectional != model.bidirectional:
            raise SystemExit(f"error: {args.model_path} holds a {'bi' if model.bidirectional else 'uni'}"
                             "directional model; drop or add --bidirectional")
        return model.train(), ckpt
    kwargs = {"ae": args.ae, **json.loads(args.model_args)}
    init = ckpt = None
    if args.ae_path:
        ckpt = load_checkpoint(args.ae_path)
        init = load_model(ckpt)
        if kind_of(init) == "temporal":  # a conv_lstm_ae checkpoint lends its frame AE
            init = init.ae
        if kind_of(init) != "frame":
            raise CheckpointError(f"{args.ae_path} holds a {init.model_name} model, not a frame autoencoder")
        kwargs.update(ae=init.model_name, ae_kwargs=init.config)
    if args.bidirectional:
        kwargs["bidirectional"] = True
    model = build_model(args.model, **kwargs)
    if init is not None:
        model.ae.load_state_dict(init.state_dict(), strict=True)
    return model, ckpt


def latent_loss(out: dict) -> torch.Tensor:
    """Squared error of the filled vs the sent latent on the lost channels, each channel divided by its
    variance in the clip (floored at 1 % of the clip's mean channel variance), averaged over every
    (sample, frame, channel). Per-sample terms and a plain mean: any split of the batch across DDP
    processes gives the same gradient."""
    lost = 1.0 - out["mask"]  # (B,T,C)
    target = out["z_sent"].detach().float()
    var = target.transpose(1, 2).flatten(2).var(dim=2)  # (B,C)
    var = torch.maximum(var, 0.01 * var.mean(dim=1, keepdim=True)).clamp_min(1e-8)
    err = (out["z_filled"] - target).square().mean(dim=(-2, -1)) / var[:, None, :]
    return (err * lost).mean()


def final_name(model: str, drops: int) -> str:
    """The prototype's name for the final weights (PROTOTYPE.md 3.2)."""
    return f"{model}_dropUpTo_{drops}_features_final_weights.pth" if drops else f"{model}_final_weights.pth"


def main(argv=None):
    return run_main(train, parse_args(argv if argv is not None else sys.argv[1:]))


def check_args(args) -> None:
    if (args.seq_len < 2 or args.eval_frames < 2 or args.eval_videos < 1 or args.pixel_frames < 0 or args.gap < 1
            or not args.bursts or min(args.bursts) < 1 or not 0.0 <= args.curriculum <= 1.0
            or not 0.0 <= args.hold_prob <= 1.0):
        raise SystemExit("error: need --seq-len and --eval-frames >= 2, --eval-videos >= 1, --pixel-frames >= 0, "
                         "--gap >= 1, --bursts >= 1, --curriculum and --hold-prob in [0, 1]")


def make_optimizer(args, model):
    """Adam over the ConvLSTM and (unless --freeze-ae) the frame AE at --ae-lr-scale x the learning rate."""
    if args.freeze_ae:
        model.ae.requires_grad_(False)
    ae_ids = {id(p) for p in model.ae.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ae_ids], "lr_scale": 1.0}]
    if not args.freeze_ae:
        groups.append({"params": list(model.ae.parameters()), "lr_scale": args.ae_lr_scale})
    return torch.optim.Adam(groups, lr=args.lr)


def train(args):
    env = setup(args)
    check_args(args)
    model, init_ckpt = build(args)
    for side in {args.crop, args.size}:
        model.ae.check_size(side, side)
    channels = model.latent_channels
    if not 0 <= args.drops <= channels:
        raise SystemExit(f"error: --drops {args.drops} is outside 0..{channels} for {model.ae.model_name}")
    levels = args.eval_levels or sorted({round(f * channels) for f in EVAL_FRACTIONS})
    if not all(0 <= k <= channels for k in levels):
        raise SystemExit(f"error: --eval-levels must lie in 0..{channels}")
    split, train_ds, val_ds, test_clips = build_data(args)
    if not args.model_path:  # a new ConvLSTM: normalise its inputs with the frame AE's latent statistics
        with torch.no_grad():
            model.set_latent_stats(model.encode(torch.stack([item["x"] for item in spaced(train_ds, 8)])))
    optimizer = make_optimizer(args, model)
    amp = autocast(env.device, args.amp)
    quantizer = training_quantizer(args.quantize, init_ckpt)
    decode = args.pixel_weight > 0

    def step(net, batch, s):
        """Latent loss on the lost channels (+ pixel MSE on --pixel-frames frames) of clips under this
        step's per-frame masks; --hold-prob of the clips made still."""
        drop_now = s.ramp(args.drops)
        g = s.generator
        mask = env.shard(temporal_eval.training_masks(args.drop_mode, args.pattern, args.batch_size, args.seq_len,
                                                      channels, drop_now, g, args.bursts))
        frames = None
        if 0 < args.pixel_frames < args.seq_len:
            frames = sorted(torch.randperm(args.seq_len, generator=g)[:args.pixel_frames].tolist())
        hold = env.shard(torch.rand(args.batch_size, generator=g) < args.hold_prob)
        x = batch["x"].to(env.device, non_blocking=True)
        x = torch.where(hold.to(env.device)[:, None, None, None, None], x[:, :1].expand_as(x), x)
        with amp:
            out = net(x, mask.to(env.device), quantizer, decode=decode, frames=frames)
        lat = latent_loss(out)
        loss = args.latent_weight * lat
        if decode:
            target = x if frames is None else x[:, frames]
            loss = loss + args.pixel_weight * F.mse_loss(out["x_hat"].float(), target)
        return loss, {"latent_loss": lat.item(), "max_drop": drop_now}

    val_clips = [item["x"] for item in spaced(val_ds, max(2, args.val_frames // args.seq_len))]
    val_mode = args.drop_mode if args.drop_mode in ("tail", "burst") else "random"
    val_levels = sorted({0, args.drops // 2, args.drops})

    def validate(model):
        """Mean PSNR of the ConvLSTM fill over 0, --drops/2 and --drops channels lost on every frame."""
        val = temporal_eval.evaluate(model, val_clips, modes=[val_mode], levels=val_levels, patterns=[("iid", 0)],
                                     fills=("convlstm",), device=env.device, amp_ctx=amp, seed=args.seed)
        psnrs = {r["lost"]: r["psnr"] for r in val["rows"]}
        score = sum(psnrs.values()) / len(psnrs)
        text = " ".join(f"{k}lost:{v:.2f}dB" for k, v in psnrs.items())
        return score, {"val_mean_psnr": score, "val": {str(k): v for k, v in psnrs.items()}}, f"val {text}"

    run = fit(args, model, optimizer, train_ds, step, validate, env=env,
              name=f"{args.model}-{model.ae.model_name}-drop{args.drops}", files={"split.json": describe_split(split)},
              warmup=lambda total_steps: min(20, max(1, total_steps // 10)), log_every=5,
              curriculum=args.curriculum, curriculum_start=args.drops_from, find_unused_parameters=not decode)
    if env.is_main:
        finish(args, model, run, train_ds, test_clips, levels, amp, env.device)
    env.barrier()
    return run.dir


def finish(args, model, run, train_ds, test_clips, levels, amp, device):
    """Final weights under the seed's name (with the frame AE's wire codec, as autoencoder_train.py: its
    learned tables, or the uniform quantiser's calibration), the temporal evaluation on the test split,
    and the plots."""
    train_ds.set_epoch(0)
    if model.ae.levels > 1:  # a frame model with quality levels streams with its learned tables (LRAE_RD)
        codec = learned_codec(model.ae)
    else:
        codec = calibrate(model, spaced(train_ds, 64), bits=args.quantize or DEFAULT_BITS, seed=args.seed)
    written = run.save_final(model, final_name(args.model, args.drops), extra={"codec": codec})
    patterns = [("iid", 0)] + [("consecutive", n) for n in args.bursts]
    fills = temporal_eval.FILLS
    result = temporal_eval.evaluate(model, test_clips, modes=("random", "tail"), levels=levels, patterns=patterns,
                                    fills=fills, device=device, amp_ctx=amp, seed=args.seed, gap=args.gap)
    result.update(model=args.model, ae=model.ae.model_name, frames=[int(c.shape[0]) for c in test_clips])
    write_json(run.dir / "temporal_eval.json", result)
    temporal_eval.plot(result, run.dir / "temporal_eval.png",
                       f"{args.model} ({model.ae.model_name}), trained with up to {args.drops} lost; test split")
    plots.loss_curve(run.metrics.read(), run.dir / "loss_curve.png")
    lines = [f"run folder: {run.dir}", f"final weights: {' and '.join(map(str, written))}",
             "test PSNR (dB), every frame lossy:  lost  " + "  ".join(f"{f:>8}" for f in fills)]
    for mode in ("random", "tail"):
        for k in levels:
            row = [temporal_eval.lookup(result, mode=mode, pattern="iid", lost=k, fill=f)["psnr"] for f in fills]
            lines.append(f"  {mode:>6} {k:>4}/{model.latent_channels}  " + "  ".join(f"{v:8.2f}" for v in row))
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
