"""Train the seed's "simple pretrained classifier" (SimpleCNN) on ORIGINAL frames of the training videos.

The classifier that evaluate.py --classifier runs on reconstructions (PROTOTYPE.md 2.5(c)). Commands::

    python classifier_train.py                                   # synthetic labelled clips, minutes on 2 CPU cores
    python classifier_train.py --data /data/ucf_sports --epochs 20 --out-dir runs/cls-ucf
    torchrun --standalone --nproc_per_node=2 classifier_train.py --data /data/ucf101
    python evaluate.py --model_path CKPT --data synthetic --classifier runs/NNN-SimpleCNN/SimpleCNN_final.pth

Data: any labelled source of the data package (``synthetic`` by default; UCF Sports frames, <class>/
folders). Videos are split WHOLE into train/val/test (data.split_videos with ``--seed``), so no frame
of a test video is ever trained on (the prototype split frames at random). Training frames are random
crops of side ``--crop`` (default ``--size``; FrameDataset(train=True)), mirrored only for sources
whose labels survive a mirror (never the synthetic clips, where it would swap move_left/move_right);
evaluation frames are center crops. Training frames also get a colour jitter (``--colour-jitter``: RGB
channels shuffled, a gain and an offset per channel; see data/datasets.py): with a dozen scenes per
class a CNN otherwise tells the training videos apart by their colours instead of learning the motion
cue (on ``synthetic`` without it: train accuracy 1.0, test accuracy near chance). Cross-entropy, Adam,
cosine learning rate.

The run folder (training/engine.py) holds args.json, split.json, metrics.jsonl (train loss/accuracy,
validation accuracy per epoch), last.pth (``--resume``), best.pth (highest validation accuracy),
``<model>_final.pth`` (the last weights) and test.json (test-split accuracy).
Every checkpoint uses the common schema; the class names travel in the model's ``classes`` argument.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from data import DataError, FrameDataset, describe_split, load_videos, require_labels, split_videos
from models import build_model, load_model, model_names
from models.classifier import predict
from training.args import add_train_args
from training.engine import autocast, fit, run_main, setup, spaced, to_device
from training.run import write_json

CLASSIFIERS = model_names("classifier")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="SimpleCNN", choices=CLASSIFIERS, help="registry name")
    p.add_argument("--model-args", default="{}", help="JSON constructor arguments, e.g. '{\"width\": 48}'")
    p.add_argument("--frame-step", type=int, default=2, help="train on every k-th frame of each video")
    p.add_argument("--colour-jitter", type=float, default=0.4,
                   help="training colour jitter s: RGB channels shuffled, gain 1+-s, offset +-s/4 per channel (0: off)")
    add_train_args(p, data=["synthetic"], epochs=10, batch_size=32, lr=1e-3, amp="none", val_frames=256)
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
    train = FrameDataset(split["train"], crop=args.crop or args.size, train=True, seed=args.seed,
                         frame_step=args.frame_step, colour_jitter=args.colour_jitter)
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


def build(args, classes):
    """A new classifier for these classes, or the one in --model_path (which must know the same classes)."""
    if not args.model_path:
        return build_model(args.model, **{**json.loads(args.model_args), "num_classes": len(classes),
                                          "classes": list(classes)})
    model = load_model(args.model_path, expect=args.model).train()
    if model.classes != list(classes):
        raise DataError(f"{args.model_path} knows the classes {model.classes}, the data has {list(classes)}")
    return model


def train(args):
    env = setup(args)
    classes, split, train_ds, val_ds, test_ds = build_data(args)
    model = build(args, classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    amp = autocast(env.device, args.amp)

    def step(net, batch, s):
        """Cross-entropy of the logits."""
        x, y = to_device(batch["x"], env.device, args.channels_last), batch["label"].to(env.device)
        with amp:
            logits = net(x)["logits"]
        return F.cross_entropy(logits.float(), y), {"train_acc": (logits.argmax(1) == y).float().mean().item()}

    val_subset = spaced(val_ds, args.val_frames)

    def validate(model):
        """Top-1 accuracy on --val-frames validation frames."""
        val_acc = accuracy(model, val_subset, env.device)
        return val_acc, {"val_acc": val_acc}, f"val accuracy {val_acc:.3f}"

    trained_on = {"train_videos": [v.name for v in split["train"]]}  # evaluate.py warns if it tests on these
    run = fit(args, model, optimizer, train_ds, step, validate, env=env, name=args.model,
              files={"split.json": describe_split(split)}, extra=trained_on)
    if env.is_main:
        test_acc = accuracy(model, test_ds, env.device)
        written = run.save_final(model, f"{args.model}_final.pth", extra=trained_on, export_by_default=False,
                                 metrics={"test_acc": test_acc, "best_val_acc": run.best})
        write_json(run.dir / "test.json", {"test_acc": test_acc, "frames": len(test_ds), "classes": list(classes),
                                           "best_val_acc": run.best})
        print(f"run folder: {run.dir}\nfinal weights: {' and '.join(map(str, written))}\ntest accuracy "
              f"({len(test_ds)} frames of {len(split['test'] or split['val'])} held-out videos, {len(classes)} "
              f"classes): {test_acc:.3f}")
    env.barrier()
    return run.dir


if __name__ == "__main__":
    main(sys.argv[1:])
