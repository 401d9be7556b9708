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
import logging
import shutil
import sys

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from codec.quant import DEFAULT_BITS, calibrate, training_quantizer
from data import ClipDataset, DataError, describe_split, load_videos, split_videos
from evaluation import temporal as temporal_eval
from models import build_model, kind_of, load_model, model_names
from training.distributed import init_distributed
from training.engine import (
    EpochSampler,
    MetricsLog,
    add_common_args,
    autocast,
    capture_rng,
    cosine_lr,
    newest_checkpoint,
    prepare_run_dir,
    restore_rng,
    run_main,
    spaced,
    step_generator,
    write_json,
)
from utils import plots
from utils.checkpoint import (
    CheckpointError,
    load_checkpoint,
    make_checkpoint,
    primitives,
    save_checkpoint,
    unwrap,
)

log = logging.getLogger("autoencoder_train_vid_sequence")
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
    p.add_argument("--pattern", choices=temporal_eval.TRAIN_PATTERNS, default="mixed",
                   help="lossy frames in training: iid (every frame), one burst of consecutive frames, "
                        "or mixed (each clip one of the two)")
    p.add_argument("--bursts", type=int_list, default=list(temporal_eval.BURSTS),
                   help="burst lengths n of consecutive lossy frames (training and evaluation)")
    p.add_argument("--gap", type=int, default=temporal_eval.GAP, help="clean frames before each evaluation burst")
    p.add_argument("--hold-prob", type=float, default=0.25,
                   help="fraction of training clips made still (every frame = the first): static scenes, "
                        "where copy-previous is right, which a moving training video never shows")
    p.add_argument("--pixel-weight", type=float, default=1.0, help="weight of the pixel MSE")
    p.add_argument("--pixel-frames", type=int, default=1,
                   help="frames per clip decoded for the pixel loss, drawn per step (0 = all; the decoder "
                        "dominates the cost, the ConvLSTM always runs over the whole clip)")
    p.add_argument("--latent-weight", type=float, default=0.1,
                   help="weight of the variance-normalised latent MSE on lost channels")
    p.add_argument("--eval-frames", type=int, default=8, help="frames per test video in the final evaluation")
    p.add_argument("--eval-videos", type=int, default=2,
                   help="test videos in the final evaluation (evenly spaced over the test split)")
    p.add_argument("--eval-levels", type=int_list, default=None,
                   help="lost channels evaluated (default 0, 1/4, 1/2, 3/4, 7/8 of the channels)")
    add_common_args(p, epochs=10, batch_size=4, lr=1e-3,
                    drops_help="max channels lost per frame (0: no loss, the seed's first command)")
    p.set_defaults(drops=0, crop=112, val_frames=16, val_every=5, drop_mode="mixed")
    return p.parse_args(argv)


def build_data(args):
    videos = load_videos(args.data or ["sample"], size=args.size, seed=args.seed)
    split = split_videos(videos, seed=args.seed)
    if not split["train"]:
        raise DataError("the training split is empty: give more videos with --data")
    train = ClipDataset(split["train"], length=args.seq_len, stride=args.clip_stride, crop=args.crop,
                        train=True, seed=args.seed)
    val = ClipDataset(split["val"] or split["test"], length=args.seq_len, stride=args.seq_len, crop=args.crop)
    held_out = [v for v in split["test"] or split["val"] if v.num_frames > 1]
    held_out = [held_out[i] for i in sorted({round(k * (len(held_out) - 1) / max(args.eval_videos - 1, 1))
                                             for k in range(min(args.eval_videos, len(held_out)))})]
    if not held_out:
        raise DataError("no test (or val) video with more than one frame to evaluate on")
    test = [ClipDataset([v], length=min(args.eval_frames, v.num_frames), stride=v.num_frames, crop=args.size)[0]["x"]
            for v in held_out]
    return split, train, val, test


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
        init = getattr(init, "ae", init)  # a conv_lstm_ae checkpoint lends its frame AE
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


def final_name(model: str, drops: int, best: bool = False) -> str:
    """The prototype's file names (PROTOTYPE.md 3.2)."""
    kind = "best_val" if best else "final"
    return f"{model}_dropUpTo_{drops}_features_{kind}_weights.pth" if drops else f"{model}_{kind}_weights.pth"


def main(argv=None):
    return run_main(train, parse_args(argv if argv is not None else sys.argv[1:]))


def train(args):
    env = init_distributed(args.device)
    torch.manual_seed(args.seed)
    if args.batch_size % env.world_size:
        raise SystemExit(f"error: --batch-size {args.batch_size} is not divisible by {env.world_size} processes")
    if (args.seq_len < 2 or args.eval_frames < 2 or args.eval_videos < 1 or args.pixel_frames < 0 or args.gap < 1
            or not args.bursts or min(args.bursts) < 1 or not 0.0 <= args.curriculum <= 1.0 or args.val_every < 1
            or not 0.0 <= args.hold_prob <= 1.0):
        raise SystemExit("error: need --seq-len and --eval-frames >= 2, --eval-videos >= 1, --pixel-frames >= 0, "
                         "--gap >= 1, "
                         "--bursts >= 1, --val-every >= 1, --curriculum and --hold-prob in [0, 1]")
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

    run_dir = prepare_run_dir(args.out_dir, args.resume, f"{args.model}-{model.ae.model_name}-drop{args.drops}",
                              env.is_main)
    env.barrier()
    model.to(env.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.freeze_ae:
        model.ae.requires_grad_(False)
    ae_ids = {id(p) for p in model.ae.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ae_ids], "lr_scale": 1.0}]
    if not args.freeze_ae:
        groups.append({"params": list(model.ae.parameters()), "lr_scale": args.ae_lr_scale})
    optimizer = torch.optim.Adam(groups, lr=args.lr)
    local_bs = args.batch_size // env.world_size
    sampler = EpochSampler(train_ds, env.world_size, env.rank, args.seed)
    loader = DataLoader(train_ds, batch_size=local_bs, sampler=sampler, drop_last=True, num_workers=args.num_workers)
    steps_per_epoch = len(sampler) // local_bs
    if steps_per_epoch == 0:
        raise SystemExit(f"error: {len(train_ds)} training clips cannot fill a batch of {args.batch_size}")
    total_steps = args.epochs * steps_per_epoch
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)

    start_epoch, start_step, best = 0, 0, float("-inf")
    last = newest_checkpoint(run_dir) if args.resume else None
    if last is not None:
        ckpt = load_checkpoint(last, map_location=env.device)
        if ckpt["model"] != args.model or ckpt["model_kwargs"] != primitives(unwrap(model).config):
            raise SystemExit(f"error: {last} holds another model ({ckpt['model']} {ckpt['model_kwargs']})")
        model.load_state_dict(ckpt["state_dict"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        restore_rng(ckpt.get("rng", {}))
        start_epoch, start_step = ckpt["epoch"], ckpt["step"]
        best = ckpt["metrics"].get("best", best)
        log.info("resumed %s at epoch %d, step %d", last, start_epoch, start_step)
    if env.is_main and last is None:
        write_json(run_dir / "args.json", vars(args))
        write_json(run_dir / "split.json", describe_split(split))
    metrics = MetricsLog(run_dir, env.is_main)
    quantizer = training_quantizer(args.quantize, init_ckpt)
    amp = autocast(env.device, args.amp)
    decode = args.pixel_weight > 0
    net = DDP(model, find_unused_parameters=not decode) if env.distributed else model
    if args.compile:
        net = torch.compile(net)
    val_clips = [item["x"] for item in spaced(val_ds, max(2, args.val_frames // args.seq_len))]
    val_mode = args.drop_mode if args.drop_mode in ("tail", "burst") else "random"
    val_levels = sorted({0, args.drops // 2, args.drops})

    def checkpoint(epoch, step, name="last.pth"):
        if env.is_main:
            save_checkpoint(run_dir / name, make_checkpoint(model, optimizer=optimizer, epoch=epoch, step=step,
                                                            args=vars(args), rng=capture_rng(),
                                                            metrics={"best": best}))
        env.barrier()

    global_step = start_epoch * steps_per_epoch + start_step
    for epoch in range(start_epoch, args.epochs):
        if global_step >= total_steps:
            break
        skip = start_step if epoch == start_epoch else 0
        sampler.set_epoch(epoch, skip * local_bs)
        train_ds.set_epoch(epoch)
        model.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not env.is_main,
                   initial=skip, total=steps_per_epoch, leave=False)
        step = skip
        for batch in bar:
            if global_step >= total_steps:
                break
            lr = cosine_lr(global_step, total_steps, args.lr, warmup=min(20, max(1, total_steps // 10)))
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            drop_now = args.drops
            if args.curriculum > 0:
                drop_now = min(args.drops, round(args.drops * (global_step + 1) / (args.curriculum * total_steps)))
            g = step_generator(args.seed, epoch, step)
            torch.manual_seed(g.initial_seed())
            mask = temporal_eval.training_masks(args.drop_mode, args.pattern, args.batch_size, args.seq_len,
                                                channels, drop_now, g, args.bursts)[env.rank::env.world_size]
            frames = None
            if 0 < args.pixel_frames < args.seq_len:
                frames = sorted(torch.randperm(args.seq_len, generator=g)[:args.pixel_frames].tolist())
            hold = (torch.rand(args.batch_size, generator=g) < args.hold_prob)[env.rank::env.world_size]
            x = batch["x"].to(env.device, non_blocking=True)
            x = torch.where(hold.to(env.device)[:, None, None, None, None], x[:, :1].expand_as(x), x)
            with amp:
                out = net(x, mask.to(env.device), quantizer, decode=decode, frames=frames)
            lat = latent_loss(out)
            loss = args.latent_weight * lat
            if decode:
                target = x if frames is None else x[:, frames]
                loss = loss + args.pixel_weight * F.mse_loss(out["x_hat"].float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            global_step += 1
            bar.set_postfix(loss=f"{loss.item():.4f}", drop=drop_now, lr=f"{lr:.1e}")
            if global_step % 5 == 0 or global_step == total_steps:
                metrics.write(epoch=epoch, step=global_step, train_loss=loss.item(), latent_loss=lat.item(),
                              lr=lr, max_drop=drop_now)
            if args.ckpt_every and global_step % args.ckpt_every == 0 and step < steps_per_epoch:
                checkpoint(epoch, step)
        epoch_done = step >= steps_per_epoch
        last_epoch = epoch + 1 >= args.epochs or global_step >= total_steps
        if env.is_main and ((epoch + 1) % args.val_every == 0 or last_epoch):
            val = temporal_eval.evaluate(unwrap(model), val_clips, modes=[val_mode], levels=val_levels,
                                         patterns=[("iid", 0)], fills=("convlstm",), device=env.device,
                                         amp_ctx=amp, seed=args.seed)
            psnrs = {r["lost"]: r["psnr"] for r in val["rows"]}
            score = sum(psnrs.values()) / len(psnrs)
            metrics.write(epoch=epoch, step=global_step, val_mean_psnr=score, val={str(k): v for k, v in psnrs.items()})
            tqdm.write(f"epoch {epoch + 1}: val " + " ".join(f"{k}lost:{v:.2f}dB" for k, v in psnrs.items()))
            if score > best:
                best = score
                save_checkpoint(run_dir / final_name(args.model, args.drops, best=True),
                                make_checkpoint(model, epoch=epoch, step=global_step, args=vars(args),
                                                metrics={"val_mean_psnr": score}))
        checkpoint(epoch + 1 if epoch_done else epoch, 0 if epoch_done else step)

    if env.is_main:
        finish(args, model, run_dir, metrics, train_ds, test_clips, levels, amp, env.device)
    env.barrier()
    return run_dir


def finish(args, model, run_dir, metrics, train_ds, test_clips, levels, amp, device):
    """Final weights under the seed's name (with the wire codec's calibration of the frame AE, as
    autoencoder_train.py), the temporal evaluation on the test split, and the plots."""
    name = final_name(args.model, args.drops)
    train_ds.set_epoch(0)
    codec = calibrate(model, spaced(train_ds, 64), bits=args.quantize or DEFAULT_BITS, seed=args.seed)
    save_checkpoint(run_dir / name, make_checkpoint(model, epoch=args.epochs, step=0, args=vars(args),
                                                    metrics={"final": True}, extra={"codec": codec}))
    export_dir = args.export_dir if args.export_dir is not None else ("." if args.out_dir is None else None)
    if export_dir:
        shutil.copyfile(run_dir / name, f"{export_dir}/{name}")
    patterns = [("iid", 0)] + [("consecutive", n) for n in args.bursts]
    fills = temporal_eval.FILLS
    result = temporal_eval.evaluate(model, test_clips, modes=("random", "tail"), levels=levels, patterns=patterns,
                                    fills=fills, device=device, amp_ctx=amp, seed=args.seed, gap=args.gap)
    result.update(model=args.model, ae=model.ae.model_name, frames=[int(c.shape[0]) for c in test_clips])
    write_json(run_dir / "temporal_eval.json", result)
    temporal_eval.plot(result, run_dir / "temporal_eval.png",
                       f"{args.model} ({model.ae.model_name}), trained with up to {args.drops} lost; test split")
    plots.loss_curve(metrics.read(), run_dir / "loss_curve.png")
    lines = [f"run folder: {run_dir}", f"final weights: {run_dir / name}"
             + (f" (and {export_dir}/{name})" if export_dir else ""),
             "test PSNR (dB), every frame lossy:  lost  " + "  ".join(f"{f:>8}" for f in fills)]
    for mode in ("random", "tail"):
        for k in levels:
            row = [temporal_eval.lookup(result, mode=mode, pattern="iid", lost=k, fill=f)["psnr"] for f in fills]
            lines.append(f"  {mode:>6} {k:>4}/{model.latent_channels}  " + "  ".join(f"{v:8.2f}" for v in row))
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
