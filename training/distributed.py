"""DistributedDataParallel plumbing for `torchrun` launches (one process per GPU, any number of nodes).

Why a thin module: the loop must run unchanged as one plain process (``python -m``/``mfapr train``) and under
``torchrun --nproc_per_node N [--nnodes M --rdzv_endpoint host:port]``; everything that differs — process group,
device choice, who logs and writes checkpoints — is decided here from the environment torchrun sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). The backend is NCCL on GPUs and gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mfapr_ros.core.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job; ``world_size == 1`` for a plain run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, validates and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(pref: str, local_rank: int = 0) -> str:
    """``auto`` → ``cuda:<local_rank>`` when a GPU is visible, else ``cpu``; explicit choices are checked."""
    if pref == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device is '{pref}' but no CUDA GPU is visible; use train.device=cpu or auto")
        return f"cuda:{local_rank}" if pref == "cuda" else pref
    if pref != "cpu":
        raise ConfigError(f"train.device is '{pref}'; expected auto, cpu, cuda or cuda:N")
    return "cpu"


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); otherwise a single-process info."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local, device)


def shutdown() -> None:
    """Leave the process group (safe to call in a plain run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_mean(value: float, info: DistInfo) -> float:
    """Mean of a scalar over all ranks (logged losses are job-wide, not rank 0's share)."""
    if not info.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64,
                     device=info.device if info.device.startswith("cuda") else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / info.world_size
