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
last.pth (``--resume`` continues from it), best.pth, the final weights under the seed's name
(``<model>_final_w_random_drops.pth``, ``_w_taildrops``, ``_no_dropouts``, ``_w_burst_drops``,
``_w_mixed_drops``), sweep.json/png, loss_curve.png and reconstructions.png. Validation runs every
epoch at 0/25/50/75 % of the channels lost; "best" is the highest mean PSNR over those levels.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from codec.quant import DEFAULT_BITS, calibrate, training_quantizer
from data import DataError, FrameDataset, describe_split, load_videos, require_labels, split_videos
from evaluation.frame_eval import eval_levels, reconstructions, sweep
from models import MODELS, build_model, has_head, load_model, model_names
from models.rd_tables import learned_codec
from models.registry import grow
from network.loss import sample_masks
from training.args import add_channel_loss_args, add_train_args
from training.engine import autocast, fit, run_main, setup, spaced, to_device
from training.objectives import rd_terms
from training.run import write_json
from utils import plots
from utils.checkpoint import load_checkpoint

FRAME_MODELS = model_names("frame")
VAL_FRACTIONS = (0.0, 0.25, 0.5, 0.75)
SEED_SUFFIX = {"none": "no_dropouts", "tail": "w_taildrops", "random": "w_random_drops",
               "burst": "w_burst_drops", "mixed": "w_mixed_drops"}


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
    add_train_args(p, epochs=8, batch_size=8, lr=1e-3)
    add_channel_loss_args(p, drops_help="max channels dropped per sample (default: 3/4 of the latent channels)")
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


def final_name(model: str, drop_mode: str) -> str:
    """The prototype's name for the final weights, where the seed's sender/receiver commands look."""
    return f"{model}_final_{SEED_SUFFIX[drop_mode]}.pth"


def main(argv=None):
    return run_main(train, parse_args(argv if argv is not None else sys.argv[1:]))


def train(args):
    env = setup(args)
    needs_labels = has_head(args.model)
    videos, split, train_ds, val_ds, test_ds = build_data(args, needs_labels)
    model_kwargs = json.loads(args.model_args)
    init_ckpt = None
    if args.model_path:  # its architecture, with --model-args on top (its weights must fit)
        init_ckpt = load_checkpoint(args.model_path)
        if init_ckpt.get("model") == args.model:  # another model's checkpoint is refused below, by name
            model_kwargs = {**(init_ckpt.get("model_kwargs") or {}), **model_kwargs}
    if needs_labels:
        model_kwargs.setdefault("num_classes", len(videos.classes))
        model_kwargs.setdefault("classes", list(videos.classes))
        if list(model_kwargs["classes"]) != list(videos.classes):
            raise SystemExit(f"error: the model's classes {list(model_kwargs['classes'])} are not the data's "
                             f"{list(videos.classes)}")
    model = build_model(args.model, **model_kwargs)
    model.check_size(args.crop or args.size, args.crop or args.size)
    model.check_size(args.size, args.size)
    channels = model.latent_channels
    max_drop = args.drops if args.drops is not None else (3 * channels) // 4
    if not 0 <= max_drop <= channels:
        raise SystemExit(f"error: --drops {max_drop} is outside 0..{channels} for {args.model}")
    if args.model_path:  # --model-args may add modules (they start at their initialisation)
        new = grow(model, load_model(init_ckpt, expect=args.model).state_dict())
        if new and env.is_main:
            print(f"{args.model_path}: {len(new)} tensors are new in this model and start at their "
                  f"initialisation ({new[0]}, ...)")
    optimizer = torch.optim.Adam(model.param_groups(), lr=args.lr)
    amp = autocast(env.device, args.amp)
    quantizer = training_quantizer(args.quantize, init_ckpt)

    def step(net, batch, s):
        """Reconstruction MSE, or the rate-distortion loss, under this step's channel masks (+ cross-entropy
        of a classifier head)."""
        drop_now = s.ramp(max_drop)
        mask = env.shard(sample_masks(args.drop_mode, args.batch_size, channels, drop_now, s.generator))
        x = to_device(batch["x"], env.device, args.channels_last)
        with amp:
            out = net(x, mask.to(env.device), quantizer)
        loss, logs = rd_terms(out, x)
        if "logits" in out:
            loss = loss + args.cls_weight * F.cross_entropy(out["logits"].float(), batch["label"].to(env.device))
        return loss, {"max_drop": drop_now, **logs}

    val_loader = DataLoader(spaced(val_ds, args.val_frames), batch_size=8)
    val_levels = sorted({round(f * channels) for f in VAL_FRACTIONS})
    eval_mode = args.drop_mode if args.drop_mode in ("tail", "burst") else "random"

    def validate(model):
        """Mean PSNR over 0/25/50/75 % of the channels lost."""
        val = eval_levels(model, val_loader, eval_mode, val_levels, env.device, amp, args.seed)
        score = sum(v["psnr"] for v in val.values()) / len(val)
        text = " ".join(f"{k}lost:{v['psnr']:.2f}dB" for k, v in val.items())
        record = {"val_mean_psnr": score, "val": {str(k): v for k, v in val.items()}}
        return score, record, f"val {text} mean {score:.2f} dB"

    run = fit(args, model, optimizer, train_ds, step, validate, env=env, name=f"{args.model}-{args.drop_mode}",
              files={"split.json": describe_split(split)}, curriculum=args.curriculum, curriculum_start=args.drops_from)
    if env.is_main:
        finish(args, model, run, train_ds, test_ds, amp, env.device)
    env.barrier()
    return run.dir


def finish(args, model, run, train_ds, test_ds, amp, device):
    """Final weights under the seed's name (with the wire codec's tables: learned from the priors of a
    model with quality levels, else the uniform quantiser's calibration), the sweep on the test split,
    and the plots."""
    train_ds.set_epoch(0)
    if model.levels > 1:
        codec = learned_codec(model)
    else:
        codec = calibrate(model, DataLoader(spaced(train_ds, 256), batch_size=16),
                          bits=args.quantize or DEFAULT_BITS, seed=args.seed)
    written = run.save_final(model, final_name(args.model, args.drop_mode), extra={"codec": codec})
    channels = model.latent_channels
    loader = DataLoader(spaced(test_ds, args.val_frames), batch_size=8)
    result = sweep(model, loader, channels, device, amp, seed=args.seed)
    result["model"] = args.model
    write_json(run.dir / "sweep.json", result)
    plots.sweep_plot(result, run.dir / "sweep.png", f"{args.model} ({args.drop_mode} drops), test split")
    plots.loss_curve(run.metrics.read(), run.dir / "loss_curve.png")
    x = torch.stack([test_ds[i]["x"] for i in range(0, len(test_ds), max(1, len(test_ds) // 3))][:3]).to(device)
    rows, titles = reconstructions(model, x, "tail" if args.drop_mode == "tail" else "random", seed=args.seed)
    plots.image_grid(rows, titles, run.dir / "reconstructions.png")
    full = {r["received"]: r for r in result["results"]["random"]}
    half = channels - channels // 2
    print(f"run folder: {run.dir}\nfinal weights: {' and '.join(map(str, written))}"
          f"\ntest PSNR with all {channels} channels: {full[channels]['psnr']:.2f} dB; "
          f"half lost (random): {full[half]['psnr']:.2f} dB")
    if "accuracy" in full[channels]:
        print(f"test accuracy of the classifier head: {full[channels]['accuracy']:.3f} with all channels, "
              f"{full[half]['accuracy']:.3f} with half lost (random; chance {1 / model.num_classes:.3f})")


if __name__ == "__main__":
    main(sys.argv[1:])
