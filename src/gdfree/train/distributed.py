"""Training on several processes: torchrun's environment, the process group, and launching torchrun.

``gdfree train --nproc N`` starts N processes on this machine through torchrun (``python -m
torch.distributed.run --standalone``); several machines are started by the user's scheduler with torchrun
itself, e.g. ``torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29500 -m gdfree train CFG --out
RUN``. Each process reads RANK, WORLD_SIZE and LOCAL_RANK from the environment; the group uses NCCL on
GPUs and Gloo on CPUs. Rank 0 writes the run folder (config, split, log, checkpoints, validation); every
rank draws its own part of each global batch with its own random stream.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

__all__ = ["World", "launch", "world"]


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """The World of this process from torchrun's environment variables (one process without them).

    Raises:
        ValueError: the variables are present but malformed.
    """
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ValueError(f"WORLD_SIZE / RANK / LOCAL_RANK: not integers ({exc})") from exc
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK {rank} / WORLD_SIZE {size}: not a valid place among the processes")
    return World(rank, size, local)


def init(place: World, device: str) -> str:
    """Join the process group (NCCL for CUDA, else Gloo; 2 h timeout, as a validation on rank 0 may take
    a while) and return this rank's device (``cuda:LOCAL_RANK`` for CUDA)."""
    import torch
    import torch.distributed as dist

    cuda = str(device).startswith("cuda")
    if cuda:
        device = f"cuda:{place.local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=2))
    return device


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m gdfree <argv>`` in ``nproc`` processes on this machine through torchrun; returns its
    exit code (non-zero when any process failed)."""
    if nproc < 2:
        raise ValueError(f"--nproc: expected 2 or more processes to launch, got {nproc}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "gdfree", *argv]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
                                                            str(max(1, (os.cpu_count() or 1) // nproc)))}  # fmt: skip
    return subprocess.run(command, env=env, check=False).returncode
