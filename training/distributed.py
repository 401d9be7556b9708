"""Distributed setup, detected rather than assumed (STYLE.md, convention 8).

``python script.py`` runs one process; ``torchrun --nproc_per_node=N script.py`` (or ``srun torchrun``
from slurm/) runs N, recognised by torchrun's RANK / LOCAL_RANK / WORLD_SIZE variables. The backend
is nccl on CUDA and gloo on CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's rows of a tensor drawn for the global batch: rows rank, rank + W, ... (the
        samples training.engine.EpochSampler gives this process in every step)."""
        return batch[self.rank::self.world_size]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA when present. Asking for CUDA without one is an error, not a silent fallback."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda was asked for, but no CUDA device is available here")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type not in ("cpu", "mps"):
        raise SystemExit(f"error: unsupported --device {name!r} (use auto, cpu or cuda)")
    return device


def init_distributed(device_name: str = "auto") -> DistEnv:
    """Initialise the process group when launched by torchrun; otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
        log.info("DDP: rank %d/%d on %s (%s)", rank, world_size, device, backend)
    return DistEnv(rank, local_rank, world_size, device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
