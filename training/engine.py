"""The training engine every training script runs through (MAE's engine split; STYLE.md, convention 15).

A script builds its data, model, optimizer and two callbacks, then calls ``fit``::

    env = setup(args)                                   # DDP or one process, seed, batch-size check
    run = fit(args, model, optimizer, train_set, step, validate, env=env, name="LRAE_VC-random")
    run.save_final(model, "LRAE_VC_final_w_random_drops.pth")

``step(net, batch, s) -> (loss, logs)`` computes one batch's loss (``s`` is a ``Step``: its seeded
generator, the learning rate, the curriculum); the engine does the backward pass and the optimizer
step. ``validate(model) -> (score, record, text)`` runs on rank 0; higher scores are better. The
engine owns everything around them: the run folder, resume, the learning-rate schedule (linear warmup,
then cosine decay; a pure function of the step, so it needs no saved state), the curriculum, seeding,
sampler skip, metrics.jsonl, the tqdm bar, checkpoints on rank 0 followed by a DDP barrier, and
best-tracking. It imports neither ``models`` nor ``data``.

A run folder (DiT style) holds everything one run writes; the weight files are named the same way by
every script::

    runs/003-LRAE_VC-random/
        args.json  split.json  metrics.jsonl
        last.pth      model, optimizer, epoch/step, RNG and best score: --resume continues from it
                      (written every --ckpt-every steps and after every epoch)
        best.pth      the weights with the best validation score so far (score in its "metrics")
        <final>.pth   the last weights, under the script's seed name:
                      autoencoder_train.py              <model>_final_w_random_drops.pth (_w_taildrops,
                                                        _no_dropouts, _w_burst_drops, _w_mixed_drops)
                      autoencoder_train_vid_sequence.py conv_lstm_ae_final_weights.pth, with --drops K
                                                        conv_lstm_ae_dropUpTo_K_features_final_weights.pth
                      classifier_train.py               <model>_final.pth
        ... and each script's report (plots, sweep.json, temporal_eval.json, test.json)

The autoencoder scripts also copy the final weights to the working directory when ``--out-dir`` is
not given (where the seed's sender/receiver commands look), or to ``--export-dir``. Run folders and
``--resume`` / ``--resume-or-start``: training/run.py.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset
from tqdm import tqdm

from training.distributed import DistEnv, cleanup_distributed, init_distributed
from training.run import LAST, MetricsLog, capture_rng, open_run, restore_rng, write_json
from training.run import prepare_run_dir as prepare_run_dir  # evaluate.py imports these two from here
from training.run import safe_name as safe_name
from utils.checkpoint import load_checkpoint, make_checkpoint, primitives, save_checkpoint, unwrap

log = logging.getLogger(__name__)
BEST = "best.pth"


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


def setup(args) -> DistEnv:
    """One process or DDP (training/distributed.py), checked flags, and the seed. Every rank seeds with
    ``--seed`` itself, not seed + rank: the model starts identical everywhere, and each step's draws come
    from ``step_generator`` over the global batch, of which a process takes its rows (``env.shard``),
    so one and N processes train on the same draws."""
    env = init_distributed(args.device)
    torch.manual_seed(args.seed)
    if args.batch_size % env.world_size:
        raise SystemExit(f"error: --batch-size {args.batch_size} is not divisible by {env.world_size} processes")
    if args.epochs < 1 or args.val_every < 1:
        raise SystemExit("error: need --epochs >= 1 and --val-every >= 1")
    return env


def spaced(dataset, n: int):
    """At most n evenly spaced items of a dataset (keeps evaluation affordable on a CPU)."""
    if len(dataset) <= n:
        return dataset
    return Subset(dataset, [round(i * (len(dataset) - 1) / max(n - 1, 1)) for i in range(n)])


def autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise SystemExit("error: --amp fp16 needs CUDA; use --amp bf16 on the CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """A batch of images on the training device, in the model's memory format."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def step_generator(seed: int, epoch: int, step: int, salt: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, epoch, step): the same draws in any process layout."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_033 + step) * 31 + salt)


def cosine_lr(step: int, total: int, peak: float, warmup: int = 20, floor: float = 0.05) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay from ``peak`` to ``floor * peak``."""
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


@dataclass
class Step:
    """Where one training step stands, handed to the script's step function."""

    epoch: int
    index: int  # batches already done in this epoch
    global_step: int  # optimizer steps already done in the run
    total_steps: int
    lr: float
    generator: torch.Generator  # seeded by (seed, epoch, index): the same after a resume and in any layout
    curriculum: float = 0.0  # fraction of training over which ramp() rises to its full value
    curriculum_start: float = 0.0  # fraction of training before which ramp() is 0

    def ramp(self, value: int) -> int:
        """``value`` from the first ``curriculum_start`` of training on (0 before), ramped linearly up from
        0 over the next ``curriculum`` of training (0: at once)."""
        done = self.global_step - self.curriculum_start * self.total_steps
        if done < 0:
            return 0
        if self.curriculum <= 0:
            return value
        return min(value, round(value * (done + 1) / (self.curriculum * self.total_steps)))


@dataclass
class Run:
    """A finished fit: its folder, metrics log and best validation score."""

    args: argparse.Namespace
    dir: Path
    metrics: MetricsLog
    best: float

    def save_final(self, model, name: str, *, metrics: dict | None = None, extra: dict | None = None,
                   export_by_default: bool = True) -> list[Path]:
        """The final weights as ``<run folder>/name``, copied to ``--export-dir`` (or, with
        ``export_by_default`` and no ``--out-dir``, to the working directory). Returns the files written."""
        path = save_checkpoint(self.dir / name, make_checkpoint(
            model, epoch=self.args.epochs, step=0, args=vars(self.args), metrics={"final": True, **(metrics or {})},
            extra=extra))
        export_dir = self.args.export_dir
        if export_dir is None and export_by_default and self.args.out_dir is None:
            export_dir = "."
        if export_dir is None:
            return [path]
        shutil.copyfile(path, Path(export_dir) / name)
        return [path, Path(export_dir) / name]


class _Fit:
    """One fit() call: its run folder, position, best score, the loop, validation and checkpoints."""

    def __init__(self, args, model, optimizer, train_set, step_fn, validate_fn, env: DistEnv, *,
                 warmup: int | Callable[[int], int], log_every: int, curriculum: float, extra: dict | None,
                 curriculum_start: float = 0.0):
        self.args, self.model, self.optimizer, self.env = args, model, optimizer, env
        self.train_set, self.step_fn, self.validate_fn = train_set, step_fn, validate_fn
        self.log_every, self.curriculum, self.extra = log_every, curriculum, extra
        self.curriculum_start = curriculum_start
        self.local_bs = args.batch_size // env.world_size
        self.sampler = EpochSampler(train_set, env.world_size, env.rank, args.seed)
        self.loader = DataLoader(train_set, batch_size=self.local_bs, sampler=self.sampler, drop_last=True,
                                 num_workers=args.num_workers, persistent_workers=args.num_workers > 0)
        self.steps_per_epoch = len(self.sampler) // self.local_bs
        if self.steps_per_epoch == 0:
            raise SystemExit(f"error: {len(train_set)} training items cannot fill a batch of {args.batch_size}")
        self.total_steps = args.epochs * self.steps_per_epoch
        if args.max_steps is not None:
            self.total_steps = min(self.total_steps, args.max_steps)
        self.warmup = warmup(self.total_steps) if callable(warmup) else warmup
        self.start_epoch, self.start_step, self.global_step, self.best = 0, 0, 0, float("-inf")

    def open(self, name: str, files: dict) -> None:
        """The run folder; then either the state of its last.pth or, for a new run, args.json and ``files``."""
        self.dir, last = open_run(self.args, name, self.env.is_main)
        self.env.barrier()
        self.model.to(self.env.device)
        if self.args.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if last is not None:
            self.resume(last)
        elif self.env.is_main:
            for file, obj in {"args.json": vars(self.args), **files}.items():
                write_json(self.dir / file, obj)
        self.metrics = MetricsLog(self.dir, self.env.is_main)

    def resume(self, last: Path) -> None:
        """Model, optimizer, RNG, position and best score from ``last.pth``, which must hold this model."""
        ckpt = load_checkpoint(last, map_location=self.env.device)
        model, config = unwrap(self.model), primitives(unwrap(self.model).config)
        if ckpt["model"] != model.model_name or ckpt["model_kwargs"] != config:
            raise SystemExit(f"error: {last} holds another model ({ckpt['model']} {ckpt['model_kwargs']}), "
                             f"not {model.model_name} {config}")
        model.load_state_dict(ckpt["state_dict"], strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        restore_rng(ckpt.get("rng", {}))
        self.start_epoch, self.start_step = ckpt["epoch"], ckpt["step"]
        self.global_step = self.start_epoch * self.steps_per_epoch + self.start_step
        self.best = ckpt["metrics"].get("best", self.best)
        log.info("resumed %s at epoch %d, step %d", last, self.start_epoch, self.start_step)

    def save_last(self, epoch: int, step: int) -> None:
        """last.pth on rank 0 (resumes at batch ``step`` of ``epoch``), then a barrier."""
        if self.env.is_main:
            save_checkpoint(self.dir / LAST, make_checkpoint(
                self.model, optimizer=self.optimizer, epoch=epoch, step=step, args=vars(self.args),
                rng=capture_rng(), metrics={"best": self.best}))
        self.env.barrier()

    def step_context(self, epoch: int, index: int) -> Step:
        """Sets this step's learning rate (times a group's ``lr_scale``) and seeds its draws."""
        lr = cosine_lr(self.global_step, self.total_steps, self.args.lr, warmup=self.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        g = step_generator(self.args.seed, epoch, index)
        torch.manual_seed(g.initial_seed())  # dropout etc.: the same draws after a resume
        return Step(epoch, index, self.global_step, self.total_steps, lr, g, self.curriculum, self.curriculum_start)

    def train_epoch(self, net, epoch: int, skip: int) -> int:
        """One epoch from batch ``skip``; returns the batches done in it."""
        self.sampler.set_epoch(epoch, skip * self.local_bs)
        self.train_set.set_epoch(epoch)  # the dataset's random crops depend on (seed, epoch, item)
        self.model.train()
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{self.args.epochs}", disable=not self.env.is_main,
                   initial=skip, total=self.steps_per_epoch, leave=False)
        index = skip
        for batch in bar:
            if self.global_step >= self.total_steps:
                break
            s = self.step_context(epoch, index)
            loss, logs = self.step_fn(net, batch, s)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.args.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.clip_grad)
            self.optimizer.step()
            index += 1
            self.global_step += 1
            record = {"train_loss": loss.item(), **logs, "lr": s.lr}
            bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in record.items()})
            if self.global_step % self.log_every == 0 or self.global_step == self.total_steps:
                self.metrics.write(epoch=epoch, step=self.global_step, **record)
            if self.args.ckpt_every and self.global_step % self.args.ckpt_every == 0 and index < self.steps_per_epoch:
                self.save_last(epoch, index)
        return index

    def validate(self, epoch: int) -> None:
        """Rank 0: score the model, log it, and keep best.pth when the score beats the best so far."""
        with torch.no_grad():
            score, record, text = self.validate_fn(unwrap(self.model))
        self.metrics.write(epoch=epoch, step=self.global_step, **record)
        tqdm.write(f"epoch {epoch + 1}: {text}")
        if score > self.best:
            self.best = score
            save_checkpoint(self.dir / BEST, make_checkpoint(self.model, epoch=epoch, step=self.global_step,
                                                             args=vars(self.args), metrics=record, extra=self.extra))

    def run(self, net) -> None:
        """Epochs from the resume point to --epochs or --max-steps; validation and last.pth after each."""
        for epoch in range(self.start_epoch, self.args.epochs):
            if self.global_step >= self.total_steps:
                break
            done = self.train_epoch(net, epoch, self.start_step if epoch == self.start_epoch else 0)
            last_epoch = epoch + 1 >= self.args.epochs or self.global_step >= self.total_steps
            if self.env.is_main and ((epoch + 1) % self.args.val_every == 0 or last_epoch):
                self.validate(epoch)
            if done >= self.steps_per_epoch:
                self.save_last(epoch + 1, 0)
            else:
                self.save_last(epoch, done)


def fit(args, model, optimizer, train_set, step_fn, validate_fn, *, env: DistEnv, name: str,
        files: dict | None = None, extra: dict | None = None, warmup: int | Callable[[int], int] = 20,
        log_every: int = 10, curriculum: float = 0.0, find_unused_parameters: bool = False,
        curriculum_start: float = 0.0) -> Run:
    """Train ``model`` on ``train_set`` (a dataset with ``set_epoch(epoch)``) for ``args.epochs`` epochs.

    ``name`` names a new run folder (``runs/NNN-<name>``); ``files`` are JSON files written into a new
    run folder next to args.json (e.g. {"split.json": ...}); ``extra`` goes into best.pth. ``warmup``:
    steps of learning-rate warmup, or a function of the run's total steps. metrics.jsonl gets the
    training loss every ``log_every`` steps; ``curriculum`` is the fraction of training over which
    ``Step.ramp`` rises, from ``curriculum_start`` (a fraction of training) on; ``find_unused_parameters``
    is handed to DDP.
    """
    loop = _Fit(args, model, optimizer, train_set, step_fn, validate_fn, env, warmup=warmup,
                log_every=log_every, curriculum=curriculum, extra=extra, curriculum_start=curriculum_start)
    loop.open(name, files or {})
    net = DDP(model, find_unused_parameters=find_unused_parameters) if env.distributed else model
    if args.compile:
        net = torch.compile(net)
    loop.run(net)
    return Run(args, loop.dir, loop.metrics, loop.best)
