"""The flags every training script shares, declared once (STYLE.md, conventions 1 and 15).

Kebab-case, with the seed's snake_case spellings kept as aliases (``--model_path``, ``--batch_size``).
``add_train_args`` is what training.engine.fit reads (run folder, resume, schedule, checkpoints, DDP,
precision); ``add_channel_loss_args`` adds what the autoencoder scripts train against (channel loss and
its curriculum, latent quantisation). A script passes its own defaults and adds only its own flags.
"""

from __future__ import annotations

import argparse

from network.loss import TRAIN_MODES
from utils.argtypes import number_in

DATA_HELP = ("data sources: 'sample' (embedded clips and photos), 'synthetic' (labelled clips), or paths "
             "(UCF Sports frames, <class>/<video>/<frame>, video files or folders, photos)")


def add_train_args(p: argparse.ArgumentParser, *, epochs: int, batch_size: int, lr: float,
                   data: list[str] | None = None, amp: str = "bf16", val_frames: int = 48) -> None:
    """Data, optimisation, run folder, resume, checkpoints, devices: the flags fit() reads."""
    p.add_argument("--data", nargs="+", default=data, help=DATA_HELP)
    p.add_argument("--size", type=int, default=224, help="frames are resized so their short side is this")
    p.add_argument("--crop", type=int, default=None,
                   help="training crop side (default --size); validation and tests use --size center crops")
    p.add_argument("--epochs", type=int, default=epochs, help="passes over the training split")
    p.add_argument("--batch-size", "--batch_size", type=int, default=batch_size,
                   help="global batch size (split evenly across DDP processes)")
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate (Adam, warmup then cosine decay)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (smoke runs)")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, crops, masks and init")
    p.add_argument("--model-path", "--model_path", default=None, help="initialise weights from this checkpoint")
    p.add_argument("--out-dir", "--out_dir", default=None,
                   help="run folder (default: a new numbered folder under runs/)")
    p.add_argument("--export-dir", default=None,
                   help="also copy the final weights here (the autoencoder scripts default to the working "
                        "directory when --out-dir is not given, where the seed's commands look for them)")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue the run folder's last.pth (an error if there is none)")
    resume.add_argument("--resume-or-start", action="store_true",
                        help="continue the run folder's last.pth, or start the run there if there is none "
                             "(what a requeued Slurm job wants)")
    p.add_argument("--val-frames", type=int, default=val_frames, help="validation frames (evenly spaced)")
    p.add_argument("--val-every", type=int, default=1, help="validate every N epochs (and after the last)")
    p.add_argument("--ckpt-every", type=int, default=200, help="save last.pth every N steps (and each epoch)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default=amp,
                   help="autocast precision (fp16 needs CUDA); bf16 is ~2x faster on recent CPUs")
    p.add_argument("--clip-grad", type=float, default=0.0,
                   help="clip the gradients' global norm to this (0: off); rate-distortion runs use 1")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster convs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")


def add_channel_loss_args(p: argparse.ArgumentParser, *, drops_help: str) -> None:
    """What an autoencoder trains against: lost channels (ramped by a curriculum) and quantisation."""
    p.add_argument("--drop-mode", "--drop_mode", choices=TRAIN_MODES, default="random",
                   help="channel loss during training: tail (PNC), random (GRACE), burst, mixed (one of the "
                        "three per sample), none")
    p.add_argument("--drops", type=int, default=None, help=drops_help)
    p.add_argument("--curriculum", type=float, default=0.0,
                   help="fraction of training over which the max drop ramps linearly up to --drops (0 = off)")
    p.add_argument("--drops-from", type=number_in(float, 0.0, 1.0), default=0.0,
                   help="fraction of training before which nothing is dropped (0.8: train clean, then with loss "
                        "for the last 20 %%, as GRACE fine-tunes a clean codec; a rate-distortion model trained "
                        "with loss from the start lost 2 dB, checkpoints/MANIFEST.md)")
    p.add_argument("--quantize", type=int, default=0,
                   help="fine-tune through B-bit latent quantisation (straight-through estimator); 0 = off")
