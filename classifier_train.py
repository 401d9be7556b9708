"""Train the seed's "simple pretrained classifier" (SimpleCNN) on ORIGINAL frames of the training videos.

The classifier that evaluate.py --classifier runs on reconstructions (PROTOTYPE.md 2.5(c)). Commands::

    python classifier_train.py                                   # synthetic labelled clips, minutes on 2 CPU cores
    python classifier_train.py --data /data/ucf_sports --epochs 20 --out-dir runs/cls-ucf
    torchrun --standalone --nproc_per_node=2 classifier_train.py --data /data/ucf101
    python evaluate.py --model_path CKPT --data synthetic --classifier runs/NNN-SimpleCNN/SimpleCNN_final.pth

Data: any labelled source of the data package (``synthetic`` by default; UCF Sports frames, <class>/
folders). Videos are split WHOLE into train/val/test (data.split_videos with ``--seed``), so no frame
of a test video is ever trained on (the prototype split frames at random). Training frames are random
crops of side ``--size`` (FrameDataset(train=True)), mirrored only for sources whose labels survive a
mirror (never the synthetic clips, where it would swap move_left/move_right); evaluation frames are
center crops. Training frames also get a colour jitter (``--colour-jitter``: RGB channels shuffled, a
gain and an offset per channel; see data/datasets.py): with a dozen scenes per class a CNN otherwise
tells the training videos apart by their colours instead of learning the motion cue (on ``synthetic``
without it: train accuracy 1.0, test accuracy near chance). Cross-entropy, Adam, cosine learning rate.

The run folder (training/engine.py) holds args.json, split.json, metrics.jsonl (train loss/accuracy,
validation accuracy per epoch), last.pth (``--resume``), ``<model>_best_validation.pth`` (highest
validation accuracy), ``<model>_final.pth`` (the last weights) and test.json (test-split accuracy).
Every checkpoint uses the common schema; the class names travel in the model's ``classes`` argument.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from data import DataError, FrameDataset, describe_split, load_videos, require_labels, split_videos
from models import build_model, model_names
from models.classifier import predict
from training.distributed import init_distributed
from training.engine import (
    EpochSampler,
    MetricsLog,
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
from utils.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint, unwrap

log = logging.getLogger("classifier_train")
CLASSIFIERS = model_names("classifier")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="SimpleCNN", choices=CLASSIFIERS, help="registry name")
    p.add_argument("--model-args", default="{}", help="JSON constructor arguments, e.g. '{\"width\": 48}'")
    p.add_argument("--data", nargs="+", default=["synthetic"], help="labelled data sources (see data/sources.py)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training split")
    p.add_argument("--batch-size", "--batch_size", type=int, default=32, help="global batch size")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (Adam, cosine decay)")
    p.add_argument("--size", type=int, default=224, help="frames: short side resized to this, then center-cropped")
    p.add_argument("--frame-step", type=int, default=2, help="train on every k-th frame of each video")
    p.add_argument("--colour-jitter", type=float, default=0.4,
                   help="training colour jitter s: RGB channels shuffled, gain 1+-s, offset +-s/4 per channel (0: off)")
    p.add_argument("--val-frames", type=int, default=256, help="validation frames (evenly spaced)")
    p.add_argument("--out-dir", "--out_dir", default=None, help="run folder (default: a new runs/NNN-<model>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the shuffling and the init")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="autocast precision")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (smoke runs)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--ckpt-every", type=int, default=200, help="save last.pth every N steps (and each epoch)")
    return p.parse_args(argv)


def main(argv=None):
    return run_main(train, parse_args(argv if argv is not None else sys.argv[1:]))


def build_data(args):
    videos = load_videos(args.data, size=args.size, seed=args.seed)
    require_labels(videos)
    if len(videos.classes) < 2:
        raise DataError(f"a classifier needs at least 2 classes, the data has {len(videos.classes)}")
    split = split_videos(videos, seed=args.seed)
    if not split["train"] or not (split["val"] or split["test"]):
        raise DataError(f"{len(videos.videos)} video(s) cannot be split by video into train and held-out sets; "
                        "give at least 3")
    train = FrameDataset(split["train"], crop=args.size, train=True, seed=args.seed, frame_step=args.frame_step,
                         colour_jitter=args.colour_jitter)
    val = FrameDataset(split["val"] or split["test"], crop=args.size)
    test = FrameDataset(split["test"] or split["val"], crop=args.size)
    return videos.classes, split, train, val, test


def accuracy(model, dataset, device, batch_size: int = 32) -> float:
    """Top-1 accuracy over a dataset of {"x", "label"} items."""
    right = total = 0
    for batch in DataLoader(dataset, batch_size=batch_size):
        pred = predict(model, batch["x"].to(device))
        right += int((pred.cpu() == batch["label"]).sum())
        total += len(pred)
    return right / max(total, 1)


def train(args):
    env = init_distributed(args.device)
    torch.manual_seed(args.seed)
    if args.batch_size % env.world_size or args.epochs < 1:
        raise SystemExit(f"error: need --epochs >= 1 and --batch-size divisible by {env.world_size} processes")
    classes, split, train_ds, val_ds, test_ds = build_data(args)
    kwargs = {**json.loads(args.model_args), "num_classes": len(classes), "classes": list(classes)}
    model = build_model(args.model, **kwargs).to(env.device)
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
    run_dir = prepare_run_dir(args.out_dir, args.resume, args.model, env.is_main)
    env.barrier()

    start_epoch, start_step, best = 0, 0, -1.0
    last = newest_checkpoint(run_dir) if args.resume else None
    if last is not None:
        ckpt = load_checkpoint(last, map_location=env.device)
        if ckpt["model"] != args.model:
            raise SystemExit(f"error: {last} holds a {ckpt['model']} model, not {args.model}")
        model.load_state_dict(ckpt["state_dict"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        restore_rng(ckpt.get("rng", {}))
        start_epoch, start_step, best = ckpt["epoch"], ckpt["step"], ckpt["metrics"].get("best", best)
        log.info("resumed %s at epoch %d, step %d", last, start_epoch, start_step)
    if env.is_main and last is None:
        write_json(run_dir / "args.json", vars(args))
        write_json(run_dir / "split.json", describe_split(split))
    metrics = MetricsLog(run_dir, env.is_main)
    amp = autocast(env.device, args.amp)
    net = DDP(model) if env.distributed else model
    val_subset = spaced(val_ds, args.val_frames)
    trained_on = {"train_videos": [v.name for v in split["train"]]}  # evaluate.py warns if it tests on these

    def checkpoint(epoch, step, name="last.pth", **extra):
        if env.is_main:
            save_checkpoint(run_dir / name, make_checkpoint(model, optimizer=optimizer, epoch=epoch, step=step,
                                                            args=vars(args), rng=capture_rng(),
                                                            metrics={"best": best, **extra}))
        env.barrier()

    global_step = start_epoch * steps_per_epoch + start_step
    for epoch in range(start_epoch, args.epochs):
        if global_step >= total_steps:
            break
        skip = start_step if epoch == start_epoch else 0
        sampler.set_epoch(epoch, skip * local_bs)
        train_ds.set_epoch(epoch)
        model.train()
        step = skip
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not env.is_main, initial=skip,
                   total=steps_per_epoch, leave=False)
        for batch in bar:
            if global_step >= total_steps:
                break
            lr = cosine_lr(global_step, total_steps, args.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(step_generator(args.seed, epoch, step).initial_seed())  # dropout, resumable
            x, y = batch["x"].to(env.device), batch["label"].to(env.device)
            with amp:
                logits = net(x)["logits"]
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            global_step += 1
            train_acc = (logits.argmax(1) == y).float().mean().item()
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{train_acc:.2f}")
            if global_step % 10 == 0 or global_step == total_steps:
                metrics.write(epoch=epoch, step=global_step, train_loss=loss.item(), train_acc=train_acc, lr=lr)
            if args.ckpt_every and global_step % args.ckpt_every == 0 and step < steps_per_epoch:
                checkpoint(epoch, step)
        epoch_done = step >= steps_per_epoch
        if env.is_main:
            val_acc = accuracy(model, val_subset, env.device)
            metrics.write(epoch=epoch, step=global_step, val_acc=val_acc)
            tqdm.write(f"epoch {epoch + 1}: val accuracy {val_acc:.3f}")
            if val_acc > best:
                best = val_acc
                save_checkpoint(run_dir / f"{args.model}_best_validation.pth",
                                make_checkpoint(model, epoch=epoch, step=global_step, args=vars(args),
                                                metrics={"val_acc": val_acc}, extra=trained_on))
        checkpoint(epoch + 1 if epoch_done else epoch, 0 if epoch_done else step)

    if env.is_main:
        final = run_dir / f"{args.model}_final.pth"
        test_acc = accuracy(model, test_ds, env.device)
        save_checkpoint(final, make_checkpoint(unwrap(model), epoch=args.epochs, step=0, args=vars(args),
                                               metrics={"final": True, "test_acc": test_acc, "best_val_acc": best},
                                               extra=trained_on))
        write_json(run_dir / "test.json", {"test_acc": test_acc, "frames": len(test_ds), "classes": list(classes),
                                           "best_val_acc": best})
        print(f"run folder: {run_dir}\nfinal weights: {final}\ntest accuracy ({len(test_ds)} frames of "
              f"{len(split['test'] or split['val'])} held-out videos, {len(classes)} classes): {test_acc:.3f}")
    env.barrier()
    return run_dir


if __name__ == "__main__":
    main(sys.argv[1:])
