"""Training on several processes: torchrun's environment, the process group, and launching torchrun.

``gdfree train --nproc N`` starts N processes on this machine through torchrun (``python -m
torch.distributed.run --standalone``); several machines are started by the user's scheduler with torchrun
itself, e.g. ``torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29500 -m gdfree train CFG --out
RUN``. Each process reads RANK, WORLD_SIZE and LOCAL_RANK from the environment; the group uses NCCL on
GPUs and Gloo on CPUs. Rank 0 writes the run folder (config, split, log, checkpoints, validation); every
rank draws its own part of each global batch with its own random stream.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from gdfree.train.config import TrainConfig

__all__ = [
    "World",
    "agree",
    "barrier",
    "check_distributable",
    "gather",
    "join",
    "launch",
    "on_cuda",
    "on_main",
    "parameter_digest",
    "train_argv",
    "world",
]


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


def train_argv(config: Path | str, out: Path | str, resume: bool, options: Mapping[str, Any]) -> list[str]:
    """The ``gdfree`` arguments each torchrun process runs: ``train CONFIG --out OUT`` with ``--resume`` and every
    option of ``options`` (flag -> value) that is not None."""
    given = [item for flag, value in options.items() if value is not None for item in (flag, str(value))]
    return ["train", str(config), "--out", str(out), *(["--resume"] if resume else []), *given]


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


def on_cuda(device: str) -> bool:
    """Whether ``device`` names a GPU."""
    return str(device).startswith("cuda")


def join(cfg: TrainConfig, place: World, device: str) -> str:
    """Check that ``cfg`` can be trained by several processes and join their group; returns this rank's device."""
    check_distributable(cfg, place.size)
    return init(place, device)


def check_distributable(cfg: TrainConfig, size: int) -> None:
    """Refuse a config that ``size`` DDP processes cannot train.

    Raises:
        ValueError: the global batch does not split evenly, or generative / adversarial training is on.
    """
    from gdfree.data.translation import TRANSLATION_HEAD

    if cfg.batch_size % size:
        raise ValueError(f"batch_size {cfg.batch_size}: the global batch must split evenly over {size} processes")
    if cfg.generative.kind != "none" or (TRANSLATION_HEAD in cfg.heads and cfg.translation.adversarial_weight > 0):
        raise ValueError("generative and adversarial training run in one process only (no --nproc)")


def on_main(place: World, work: Callable[[], Any]) -> Any:
    """``work()`` on rank 0, its result (or its error, raised on every rank) shared with all ranks."""
    if not place.distributed:
        return work()
    import torch.distributed as dist

    box: list[Any] = [None]
    if place.main:
        try:
            box[0] = ("ok", work())
        except (FileExistsError, FileNotFoundError, ValueError) as exc:
            box[0] = (type(exc).__name__, str(exc))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind != "ok":
        raise {"FileExistsError": FileExistsError, "FileNotFoundError": FileNotFoundError}.get(kind, ValueError)(value)
    return value


def agree(place: World, flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any (so all ranks stop at the same step)."""
    if not place.distributed:
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(place: World, value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (``[value]`` in one process)."""
    if not place.distributed:
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * place.size
    dist.all_gather_object(values, value)
    return values


def barrier(place: World) -> None:
    """Wait for every rank (nothing in one process)."""
    if place.distributed:
        import torch.distributed as dist

        dist.barrier()


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes: equal on every rank of a healthy DDP run."""
    digest = hashlib.sha256()
    for _, p in sorted(model.state_dict().items()):
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
