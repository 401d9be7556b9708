"""Run folders (DiT style): where a run's files go, whether it may continue, and its metrics log.

Without ``--out-dir`` each run gets a new numbered folder ``runs/NNN-<name>``; ``--resume`` without
``--out-dir`` continues the newest folder of that name. A folder that already holds a run is refused
unless the run continues it. ``--resume`` insists on the folder's ``last.pth`` and stops with a
one-line error when there is none (a typo in ``--out-dir`` must not start a second run from scratch);
``--resume-or-start`` continues it when it is there and starts the run otherwise.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch

RUNS_ROOT = Path("runs")
LAST = "last.pth"


def pick_run_dir(out_dir: str | None, existing_ok: bool, name: str) -> Path:
    """The run folder to use, without creating it; an existing run is refused unless ``existing_ok``."""
    if out_dir is None:
        existing = sorted(RUNS_ROOT.glob(f"[0-9][0-9][0-9]-{name}")) if RUNS_ROOT.is_dir() else []
        if existing_ok and existing:
            return existing[-1]
        numbers = [int(p.name[:3]) for p in RUNS_ROOT.glob("[0-9][0-9][0-9]-*")] if RUNS_ROOT.is_dir() else []
        return RUNS_ROOT / f"{max(numbers, default=0) + 1:03d}-{name}"
    run = Path(out_dir)
    if run.exists() and not run.is_dir():
        raise SystemExit(f"error: --out-dir {run} exists and is not a folder")
    if not existing_ok and run.is_dir() and any(run.iterdir()):
        raise SystemExit(f"error: {run} already holds a run; pass --resume to continue it "
                         "or choose another --out-dir")
    return run


def prepare_run_dir(out_dir: str | None, existing_ok: bool, name: str, is_main: bool = True) -> Path:
    """Pick (and on rank 0 create) the run folder; refuse to overwrite a finished or running one."""
    run = pick_run_dir(out_dir, existing_ok, name)
    if is_main:
        run.mkdir(parents=True, exist_ok=True)
    return run


def open_run(args, name: str, is_main: bool) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to continue or None) for ``--out-dir``, ``--resume``, ``--resume-or-start``."""
    continuing = args.resume or args.resume_or_start
    run = pick_run_dir(args.out_dir, continuing, name)
    last = run / LAST
    if args.resume and not last.is_file():
        raise SystemExit(f"error: --resume: {run} has no {LAST} to continue; "
                         "pass --resume-or-start to start the run there instead")
    if is_main:
        run.mkdir(parents=True, exist_ok=True)
    return run, (last if continuing and last.is_file() else None)


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


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
