"""Machinery shared by the training scripts: flags, run folders, resume, AMP, samplers, logging.

A run folder (DiT style) holds everything one run writes::

    runs/003-LRAE_VC-random/
        args.json  split.json  metrics.jsonl  last.pth  best.pth  <seed-named final weights>.pth
        loss_curve.png  sweep.json  sweep.png  reconstructions.png

Without ``--out-dir`` each run gets a new numbered folder under ``runs/``; ``--resume`` without
``--out-dir`` continues the newest folder of the same model and drop mode. An explicit ``--out-dir``
that already holds a run is refused unless ``--resume`` is given, so nothing is overwritten.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import re
import time
from pathlib import Path

import torch
from torch.utils.data import DistributedSampler, Sampler, Subset

from network.loss import TRAIN_MODES
from training.distributed import cleanup_distributed

log = logging.getLogger(__name__)
RUNS_ROOT = Path("runs")
SEED_SUFFIX = {"none": "no_dropouts", "tail": "w_taildrops", "random": "w_random_drops",
               "burst": "w_burst_drops", "mixed": "w_mixed_drops"}


def run_main(train, args) -> object:
    """What every training script's main() does around ``train(args)``: logging, one-line errors
    for bad data, checkpoints or values (exit status 1, no traceback), and the process group's cleanup."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return train(args)
    except ValueError as e:  # DataError and CheckpointError are ValueErrors
        raise SystemExit(f"error: {e}") from None
    finally:
        cleanup_distributed()


def spaced(dataset, n: int):
    """At most n evenly spaced items of a dataset (keeps evaluation affordable on a CPU)."""
    if len(dataset) <= n:
        return dataset
    return Subset(dataset, [round(i * (len(dataset) - 1) / max(n - 1, 1)) for i in range(n)])


def add_common_args(p: argparse.ArgumentParser, *, epochs: int, batch_size: int, lr: float,
                    drops_help: str = "max channels dropped per sample (default: 3/4 of the latent channels)") -> None:
    """Flags both autoencoder training scripts share (kebab-case; the seed's snake_case kept as aliases)."""
    p.add_argument("--data", nargs="+", default=None,
                   help="data sources: 'sample' (embedded clips and photos), 'synthetic' (labelled clips), "
                        "or paths (UCF Sports frames, <class>/<video>/<frame>, video files or folders, photos)")
    p.add_argument("--epochs", type=int, default=epochs, help="passes over the training split")
    p.add_argument("--batch-size", "--batch_size", type=int, default=batch_size,
                   help="global batch size (split evenly across DDP processes)")
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate (Adam, cosine decay)")
    p.add_argument("--drop-mode", "--drop_mode", choices=TRAIN_MODES, default="random",
                   help="channel loss during training: tail (PNC), random (GRACE), burst, mixed (one of the "
                        "three per sample), none")
    p.add_argument("--drops", type=int, default=None, help=drops_help)
    p.add_argument("--curriculum", type=float, default=0.0,
                   help="fraction of training over which the max drop ramps linearly up to --drops (0 = off)")
    p.add_argument("--model-path", "--model_path", default=None, help="initialise weights from this checkpoint")
    p.add_argument("--out-dir", "--out_dir", default=None, help="run folder (default: a new runs/NNN-<model>-<mode>)")
    p.add_argument("--export-dir", default=None,
                   help="also write the final weights under the seed's file name here "
                        "(default: the working directory when --out-dir is not given, else nowhere)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, crops, masks and init")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="bf16",
                   help="autocast precision (fp16 needs CUDA); bf16 is ~2x faster on recent CPUs")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster convs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (smoke runs)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--size", type=int, default=224, help="frames are resized so their short side is this")
    p.add_argument("--crop", type=int, default=None,
                   help="training crop side (default --size); validation and tests use --size center crops")
    p.add_argument("--val-frames", type=int, default=48, help="validation frames per level (evenly spaced)")
    p.add_argument("--val-every", type=int, default=1, help="validate every N epochs (and after the last)")
    p.add_argument("--ckpt-every", type=int, default=200, help="save last.pth every N steps (and each epoch)")
    p.add_argument("--quantize", type=int, default=0,
                   help="fine-tune through B-bit latent quantisation (straight-through estimator); 0 = off")


def seed_file_name(model: str, drop_mode: str, final: bool = True) -> str:
    """The prototype's weight names, so the seed's sender/receiver commands find them."""
    return f"{model}_{'final' if final else 'best_validation'}_{SEED_SUFFIX[drop_mode]}.pth"


def prepare_run_dir(out_dir: str | None, resume: bool, name: str, is_main: bool = True) -> Path:
    """Pick (and on rank 0 create) the run folder; refuse to overwrite a finished or running one."""
    if out_dir is None:
        existing = sorted(RUNS_ROOT.glob(f"[0-9][0-9][0-9]-{name}")) if RUNS_ROOT.is_dir() else []
        if resume and existing:
            return existing[-1]
        numbers = [int(p.name[:3]) for p in RUNS_ROOT.glob("[0-9][0-9][0-9]-*")] if RUNS_ROOT.is_dir() else []
        run = RUNS_ROOT / f"{max(numbers, default=0) + 1:03d}-{name}"
    else:
        run = Path(out_dir)
        if run.exists() and not run.is_dir():
            raise SystemExit(f"error: --out-dir {run} exists and is not a folder")
        if not resume and run.is_dir() and any(run.iterdir()):
            raise SystemExit(f"error: {run} already holds a run; pass --resume to continue it "
                             "or choose another --out-dir")
    if is_main:
        run.mkdir(parents=True, exist_ok=True)
    return run


def autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise SystemExit("error: --amp fp16 needs CUDA; use --amp bf16 on the CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def step_generator(seed: int, epoch: int, step: int, salt: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, epoch, step): the same draws in any process layout."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_033 + step) * 31 + salt)


def cosine_lr(step: int, total: int, peak: float, warmup: int = 20, floor: float = 0.05) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


class EpochSampler(Sampler):
    """DistributedSampler (also for one process) that can skip the batches a resumed run already did.

    Both layouts shuffle with the same seeded permutation; with a global batch of B, process r of W
    takes permutation positions r, r+W, ... so one step covers exactly the same samples for any W.
    """

    def __init__(self, dataset, world_size: int, rank: int, seed: int, shuffle: bool = True):
        self.inner = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle,
                                        seed=seed, drop_last=True)
        self.skip = 0

    def set_epoch(self, epoch: int, skip_samples: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip_samples

    def __iter__(self):
        return iter(list(self.inner)[self.skip:])

    def __len__(self) -> int:
        return len(self.inner) - self.skip


class MetricsLog:
    """metrics.jsonl on rank 0: one JSON object per line."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.t0 = time.time()

    def write(self, **record) -> None:
        if self.enabled:
            record.setdefault("time", round(time.time() - self.t0, 2))
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def capture_rng() -> dict:
    return {"torch": torch.get_rng_state()}


def restore_rng(state: dict) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])


def newest_checkpoint(run_dir: Path) -> Path | None:
    last = run_dir / "last.pth"
    return last if last.is_file() else None


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
