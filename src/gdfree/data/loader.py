"""Training batches, drawn in the training process or in worker processes.

``workers = 0`` draws every batch in the training process from one numpy generator: a run and its resume
give exactly the batches of an uninterrupted run. ``workers > 0`` draws whole batches in that many
DataLoader processes (the cases are shared with them copy-on-write by fork), so patch sampling and TorchIO
augmentation no longer wait for the network step. Worker ``w`` seeds numpy and torch from
``(seed, start step, w)`` and batches come back in worker order, so a run is reproducible for a given worker
count; a resumed run draws new batches from its resume step.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from gdfree.data.augment import AugmentConfig, augment
from gdfree.data.sampling import PatchSampler

__all__ = ["Batch", "batch_stream", "make_batch"]

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]
"""images (B, C, P, P, P) float32, targets (B, H, P, P, P) float32, present (B, H) bool."""


def make_batch(
    sampler: PatchSampler, augmentation: AugmentConfig, strength: float, batch_size: int, rng: np.random.Generator
) -> Batch:
    """``batch_size`` patches drawn with ``rng``, each augmented (parameters also drawn with ``rng``) when
    ``strength`` > 0."""
    images, targets, present = [], [], []
    for _ in range(batch_size):
        image, target, has = sampler.crop(sampler.sample_params(rng))
        if strength > 0:
            image, target, _ = augment(augmentation, strength, image, target, rng)
        images.append(image)
        targets.append(target)
        present.append(has)
    return np.stack(images), np.stack(targets), np.stack(present)


class _WorkerBatches(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """An endless stream of batches; each DataLoader worker draws its own, seeded by its id."""

    def __init__(
        self, sampler: PatchSampler, augmentation: AugmentConfig, strength: float, batch_size: int, seed: int,
        start_step: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.sampler, self.augmentation, self.strength, self.batch_size = sampler, augmentation, strength, batch_size
        self.seed, self.start_step = seed, start_step

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        torch.manual_seed(int(np.random.SeedSequence([self.seed, self.start_step, worker]).generate_state(1)[0]))
        torch.set_num_threads(1)
        rng = np.random.default_rng([self.seed, self.start_step, worker])
        while True:
            yield make_batch(self.sampler, self.augmentation, self.strength, self.batch_size, rng)


def batch_stream(
    sampler: PatchSampler,
    *,
    strength: float,
    batch_size: int,
    rng: np.random.Generator,
    augmentation: AugmentConfig | None = None,
    workers: int = 0,
    seed: int = 0,
    start_step: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless training batches as CPU tensors (see :data:`Batch`): from ``rng`` in this process
    (``workers`` 0), else from ``workers`` DataLoader processes seeded by ``seed``, ``start_step`` and their id
    (``rng`` is then not used; ``pin_memory`` pins them for a faster copy to a GPU). ``augmentation``: which
    transforms and ranges (default :class:`AugmentConfig`), scaled by ``strength``."""
    augmentation = augmentation or AugmentConfig()
    if workers <= 0:
        while True:
            yield tuple(torch.from_numpy(a) for a in make_batch(sampler, augmentation, strength, batch_size, rng))
    loader = torch.utils.data.DataLoader(
        _WorkerBatches(sampler, augmentation, strength, batch_size, seed, start_step), batch_size=None,
        num_workers=workers,
        prefetch_factor=4, pin_memory=pin_memory,
    )  # fmt: skip
    yield from loader
