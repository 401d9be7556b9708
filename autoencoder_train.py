"""Train a frame autoencoder whose latent channels survive packet loss (channel dropout).

The seed's commands (embedded sample data, defaults sized for minutes on 2 CPU cores)::

    python autoencoder_train.py --model=PNC
    python autoencoder_train.py --model=PNC_with_classification      # synthetic labelled clips, 112x112
    python autoencoder_train.py --model=LRAE_VC

A full run, several GPUs, a cluster::

    python autoencoder_train.py --model LRAE_VC --data sample ../shared/data/photos --epochs 300 --crop 128
    torchrun --standalone --nproc_per_node=4 autoencoder_train.py --model PNC16 --drop-mode tail --data /data/ucf
    sbatch --gpus-per-node=4 slurm/train_1node.sbatch --model LRAE_VC --data /data/ucf101

Each run writes a folder (see training/engine.py) with args.json, split.json, metrics.jsonl,
last.pth / best.pth (resumable with ``--resume``), the final weights under the seed's name
(``<model>_final_w_random_drops.pth``, ``_w_taildrops``, ``_no_dropouts``), sweep.json/png,
loss_curve.png and reconstructions.png. Validation runs every epoch at 0/25/50/75 % of the
channels lost; "best" is the highest mean PSNR over those levels.
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
from data import DataError, FrameDataset, describe_split, load_videos, require_labels, split_videos
from evaluation.frame_eval import eval_levels, reconstructions, sweep
from models import MODELS, build_model, has_head, load_model, model_names
from network.loss import sample_masks
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
    seed_file_name,
    spaced,
    step_generator,
    write_json,
)
from utils import plots
from utils.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint, unwrap

log = logging.getLogger("autoencoder_train")
FRAME_MODELS = model_names("frame")
VAL_FRACTIONS = (0.0, 0.25, 0.5, 0.75)


# Models with a classifier head train on labelled clips; their defaults are the recipe of the shipped
# checkpoint (checkpoints/MANIFEST.md): the prototype's 1:1 loss, and drops ramped up over the first half
# (with drops from step 0 the head stayed at chance), at 112x112 so that the default run takes minutes.
HEAD_DEFAULTS = {"data": ["synthetic:48,12"], "size": 112, "epochs": 3, "batch_size": 16,
                 "cls_weight": 1.0, "curriculum": 0.5}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, choices=FRAME_MODELS,
                   help="registry name; models with a classifier head change the defaults to "
                        + " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                                   for k, v in HEAD_DEFAULTS.items()))
    p.add_argument("--model-args", default="{}", help="JSON constructor arguments, e.g. '{\"width\": 96}'")
    p.add_argument("--cls-weight", type=float, default=0.05,
                   help="weight of the cross-entropy term for models with a classifier head")
    p.add_argument("--colour-jitter", type=float, default=None,
                   help="training colour jitter s (RGB channels shuffled, gain 1+-s, offset +-s/4; see "
                        "data/datasets.py); default 0.4 for models with a classifier head, else 0")
    add_common_args(p, epochs=8, batch_size=8, lr=1e-3)
    known, _ = p.parse_known_args(argv)
    if known.model in MODELS and has_head(known.model):
        p.set_defaults(**HEAD_DEFAULTS)
    return p.parse_args(argv)


def build_data(args, needs_labels: bool):
    specs = args.data or ["sample"]
    videos = load_videos(specs, size=args.size, seed=args.seed)
    if needs_labels:
        require_labels(videos)
    split = split_videos(videos, seed=args.seed)
    if not split["train"] or not (split["val"] or split["test"]):
        n = len(videos.videos)
        raise DataError(f"{n} video(s) cannot be split by video into train and held-out sets; give at least 3")
    crop = args.crop or args.size
    jitter = args.colour_jitter if args.colour_jitter is not None else (0.4 if needs_labels else 0.0)
    train = FrameDataset(split["train"], crop=crop, train=True, seed=args.seed, colour_jitter=jitter)
    val = FrameDataset(split["val"] or split["test"], crop=args.size, train=False)
    test = FrameDataset(split["test"] or split["val"], crop=args.size, train=False)
    return videos, split, train, val, test


def main(argv=None):
    return run_main(train, parse_args(argv if argv is not None else sys.argv[1:]))


def train(args):
    env = init_distributed(args.device)
    torch.manual_seed(args.seed)
    if args.batch_size % env.world_size:
        raise SystemExit(f"error: --batch-size {args.batch_size} is not divisible by {env.world_size} processes")
    model_kwargs = json.loads(args.model_args)
    needs_labels = has_head(args.model)
    videos, split, train_ds, val_ds, test_ds = build_data(args, needs_labels)
    if needs_labels:
        model_kwargs.setdefault("num_classes", len(videos.classes))
        model_kwargs.setdefault("classes", list(videos.classes))
    model = build_model(args.model, **model_kwargs)
    crop = args.crop or args.size
    model.check_size(crop, crop)
    model.check_size(args.size, args.size)
    channels = model.latent_channels
    max_drop = args.drops if args.drops is not None else (3 * channels) // 4
    if not 0 <= max_drop <= channels:
        raise SystemExit(f"error: --drops {max_drop} is outside 0..{channels} for {args.model}")
    init_ckpt = None
    if args.model_path:
        init_ckpt = load_checkpoint(args.model_path)
        model.load_state_dict(load_model(init_ckpt, expect=args.model).state_dict(), strict=True)

    model.to(env.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    local_bs = args.batch_size // env.world_size
    sampler = EpochSampler(train_ds, env.world_size, env.rank, args.seed)
    loader = DataLoader(train_ds, batch_size=local_bs, sampler=sampler, drop_last=True,
                        num_workers=args.num_workers, persistent_workers=args.num_workers > 0)
    steps_per_epoch = len(sampler) // local_bs
    if steps_per_epoch == 0:
        raise SystemExit(f"error: {len(train_ds)} training frames cannot fill a batch of {args.batch_size}")
    total_steps = args.epochs * steps_per_epoch
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)
    run_dir = prepare_run_dir(args.out_dir, args.resume, f"{args.model}-{args.drop_mode}", env.is_main)
    env.barrier()

    start_epoch, start_step, best = 0, 0, float("-inf")
    last = newest_checkpoint(run_dir) if args.resume else None
    if last is not None:
        ckpt = load_checkpoint(last, map_location=env.device)
        if ckpt["model"] != args.model:
            raise SystemExit(f"error: {last} holds a {ckpt['model']} model, not {args.model}")
        unwrap(model).load_state_dict(ckpt["state_dict"], strict=True)
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
    net = DDP(model) if env.distributed else model
    if args.compile:
        net = torch.compile(net)
    val_loader = DataLoader(spaced(val_ds, args.val_frames), batch_size=8)
    val_levels = sorted({round(f * channels) for f in VAL_FRACTIONS})
    eval_mode = args.drop_mode if args.drop_mode in ("tail", "burst") else "random"

    def checkpoint(epoch, step, name="last.pth", **extra_metrics):
        if env.is_main:
            ckpt = make_checkpoint(model, optimizer=optimizer, epoch=epoch, step=step, args=vars(args),
                                   rng=capture_rng(), metrics={"best": best, **extra_metrics})
            save_checkpoint(run_dir / name, ckpt)
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
            lr = cosine_lr(global_step, total_steps, args.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            drop_now = max_drop
            if args.curriculum > 0:
                drop_now = min(max_drop, round(max_drop * (global_step + 1) / (args.curriculum * total_steps)))
            g = step_generator(args.seed, epoch, step)
            torch.manual_seed(g.initial_seed())  # dropout etc.: same draws after a resume
            mask = sample_masks(args.drop_mode, args.batch_size, channels, drop_now, g)[env.rank::env.world_size]
            x = batch["x"].to(env.device, non_blocking=True)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp:
                out = net(x, mask.to(env.device), quantizer)
            loss = F.mse_loss(out["x_hat"].float(), x)
            if "logits" in out:
                loss = loss + args.cls_weight * F.cross_entropy(out["logits"].float(), batch["label"].to(env.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            global_step += 1
            bar.set_postfix(loss=f"{loss.item():.4f}", drop=drop_now, lr=f"{lr:.1e}")
            if global_step % 10 == 0 or global_step == total_steps:
                metrics.write(epoch=epoch, step=global_step, train_loss=loss.item(), lr=lr, max_drop=drop_now)
            if args.ckpt_every and global_step % args.ckpt_every == 0 and step < steps_per_epoch:
                checkpoint(epoch, step)
        epoch_done = step >= steps_per_epoch
        last_epoch = epoch + 1 >= args.epochs or global_step >= total_steps
        if env.is_main and ((epoch + 1) % args.val_every == 0 or last_epoch):
            with torch.no_grad():
                val = eval_levels(unwrap(model), val_loader, eval_mode, val_levels, env.device, amp, args.seed)
            score = sum(v["psnr"] for v in val.values()) / len(val)
            metrics.write(epoch=epoch, step=global_step, val_mean_psnr=score,
                          val={str(k): v for k, v in val.items()})
            summary = " ".join(f"{k}lost:{v['psnr']:.2f}dB" for k, v in val.items())
            tqdm.write(f"epoch {epoch + 1}: val {summary} mean {score:.2f} dB")
            if score > best:
                best = score
                checkpoint_best = make_checkpoint(model, epoch=epoch, step=global_step, args=vars(args),
                                                  metrics={"val_mean_psnr": score})
                save_checkpoint(run_dir / seed_file_name(args.model, args.drop_mode, final=False), checkpoint_best)
        checkpoint(epoch + 1 if epoch_done else epoch, 0 if epoch_done else step)

    if env.is_main:
        finish(args, model, run_dir, metrics, train_ds, test_ds, channels, amp, env.device)
    env.barrier()
    return run_dir


def finish(args, model, run_dir, metrics, train_ds, test_ds, channels, amp, device):
    """Final weights under the seed's name (with the wire codec's calibration), the sweep on the
    test split, and the plots."""
    final_name = seed_file_name(args.model, args.drop_mode)
    train_ds.set_epoch(0)
    codec = calibrate(model, DataLoader(spaced(train_ds, 256), batch_size=16), bits=args.quantize or DEFAULT_BITS,
                      seed=args.seed)
    final = make_checkpoint(model, epoch=args.epochs, step=0, args=vars(args), metrics={"final": True},
                            extra={"codec": codec})
    save_checkpoint(run_dir / final_name, final)
    export_dir = args.export_dir if args.export_dir is not None else ("." if args.out_dir is None else None)
    if export_dir:
        shutil.copyfile(run_dir / final_name, f"{export_dir}/{final_name}")
    loader = DataLoader(spaced(test_ds, args.val_frames), batch_size=8)
    result = sweep(model, loader, channels, device, amp, seed=args.seed)
    result["model"] = args.model
    write_json(run_dir / "sweep.json", result)
    plots.sweep_plot(result, run_dir / "sweep.png", f"{args.model} ({args.drop_mode} drops), test split")
    plots.loss_curve(metrics.read(), run_dir / "loss_curve.png")
    x = torch.stack([test_ds[i]["x"] for i in range(0, len(test_ds), max(1, len(test_ds) // 3))][:3]).to(device)
    rows, titles = reconstructions(model, x, "tail" if args.drop_mode == "tail" else "random", seed=args.seed)
    plots.image_grid(rows, titles, run_dir / "reconstructions.png")
    full = {r["received"]: r for r in result["results"]["random"]}
    half = channels - channels // 2
    print(f"run folder: {run_dir}\nfinal weights: {run_dir / final_name}"
          + (f" (and {export_dir}/{final_name})" if export_dir else "")
          + f"\ntest PSNR with all {channels} channels: {full[channels]['psnr']:.2f} dB; "
            f"half lost (random): {full[half]['psnr']:.2f} dB")
    if "accuracy" in full[channels]:
        print(f"test accuracy of the classifier head: {full[channels]['accuracy']:.3f} with all channels, "
              f"{full[half]['accuracy']:.3f} with half lost (random; chance {1 / model.num_classes:.3f})")


if __name__ == "__main__":
    main(sys.argv[1:])
