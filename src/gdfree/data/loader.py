"""Training batches, drawn in the training process or in worker processes.

``workers = 0`` draws every batch in the training process from one numpy generator: a run and its resume
give exactly the batches of an uninterrupted run. ``workers > 0`` draws whole batches in that many
DataLoader processes (the cases are shared with them copy-on-write by fork), so patch sampling and TorchIO
augmentation no longer wait for the network step. Worker ``w`` seeds numpy and torch from
``(seed, start step, w)`` and batches come back in worker order, so a run is reproducible for a given worker
count; a resumed run draws new batches from its resume step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Iterator, Sequence

import numpy as np
import torch

from gdfree.data.augment import AugmentConfig, augment
from gdfree.data.generative import Synthesiser
from gdfree.data.lesion_sim import LesionSimConfig, simulate
from gdfree.data.sampling import PatchParams, PatchSampler
from gdfree.data.translation import TRANSLATION_HEAD

__all__ = ["Batch", "PriorDropout", "batch_stream", "make_batch"]

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]
"""images (B, C, P, P, P) float32, targets (B, H, P, P, P) float32, present (B, H) bool."""


@dataclasses.dataclass(frozen=True)
class PriorDropout:
    """Training patches of exams with a prior drawn as if it were absent, with ``probability``: the prior channel
    becomes the FLAIR channel, the difference 0, and the ``new`` head gets no loss (``new``: its target index,
    None without that head). One model then learns both modes on the same exams (:data:`gdfree.types.PAIR_ROLES`)."""

    probability: float
    flair: int
    prior: int
    difference: int
    new: int | None = None

    @classmethod
    def for_inputs(cls, probability: float, modalities: Sequence[str], heads: Sequence[str]) -> PriorDropout | None:
        """The dropout for a model with these input roles and heads; None without prior-exam channels."""
        if "priorFLAIR" not in modalities:
            return None
        index = list(modalities).index
        return cls(probability, index("FLAIR"), index("priorFLAIR"), index("diffFLAIR"),
                   list(heads).index("new") if "new" in heads else None)  # fmt: skip

    def apply(self, image: np.ndarray, has: np.ndarray, rng: np.random.Generator) -> None:
        """Drop the prior of one patch in place with :attr:`probability` (a patch already without one is left)."""
        if self.probability <= 0 or rng.random() >= self.probability:
            return
        image[self.prior] = image[self.flair]
        image[self.difference] = 0.0
        if self.new is not None:
            has[self.new] = False


def _simulate_lesion(
    sampler: PatchSampler, params: PatchParams, image: np.ndarray, target: np.ndarray, has: np.ndarray,
    cfg: LesionSimConfig, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One lesion operation on a training patch (:func:`gdfree.data.lesion_sim.simulate`); the CarveMix donor is
    another patch drawn by the sampler (usually around a lesion); new lesions go into white matter when the
    sampler knows the T1w channel, else anywhere in the brain."""
    if rng.random() >= cfg.probability:
        return image, target
    labels = {h: (target[i] > 0.5 if has[i] else None) for i, h in enumerate(sampler.heads)}
    donor_params = sampler.sample_params(rng)
    donor_image, donor_target, donor_has = sampler.crop(donor_params)
    donor_labels = {h: (donor_target[i] > 0.5 if donor_has[i] else None) for i, h in enumerate(sampler.heads)}
    spacing = sampler.cases[params.case].spacing_mm
    image, labels, _ = simulate(
        dataclasses.replace(cfg, probability=1.0), rng, image, labels, sampler.crop_brain(params), spacing,
        model=sampler.lesion_model(params.case), donor=(donor_image, donor_labels),
        placement=sampler.crop_white_matter(params),
    )  # fmt: skip
    target = np.stack([np.asarray(labels[h], np.float32) if has[i] else target[i] for i, h in enumerate(sampler.heads)])
    return image, target


def make_batch(
    sampler: PatchSampler, augmentation: AugmentConfig, strength: float, batch_size: int, rng: np.random.Generator,
    lesion_sim: LesionSimConfig | None = None, synthesiser: Synthesiser | None = None,
) -> Batch:  # fmt: skip
    """``batch_size`` patches drawn with ``rng``; each may be replaced by a generated one (``synthesiser``), then
    gets a simulated lesion change with ``lesion_sim``'s probability, then is augmented (parameters also
    drawn with ``rng``) when ``strength`` > 0. The sampler's ``pair_artefacts``
    (:class:`gdfree.data.pair_artefacts.PairArtefacts`) and then its ``prior_dropout`` (:class:`PriorDropout`), when
    set, first alter or drop the prior of a patch."""
    images, targets, present = [], [], []
    continuous = [h for h, name in enumerate(sampler.heads) if name == TRANSLATION_HEAD]
    for _ in range(batch_size):
        params = sampler.sample_params(rng)
        image, target, has = sampler.crop(params)
        if sampler.pair_artefacts is not None:
            case = sampler.cases[params.case]
            scale = sampler.pair_artefacts.scale(params.case, case.image, case.brain)
            sampler.pair_artefacts.apply(image, sampler.crop_brain(params), scale, rng)
        if sampler.prior_dropout is not None:
            sampler.prior_dropout.apply(image, has, rng)
        if synthesiser is not None:
            image, target = synthesiser.maybe_replace(sampler, params, image, target, has, rng)
        if lesion_sim is not None and lesion_sim.probability > 0:
            image, target = _simulate_lesion(sampler, params, image, target, has, lesion_sim, rng)
        if strength > 0:
            image, target, _ = augment(augmentation, strength, image, target, rng, continuous)
        images.append(image)
        targets.append(target)
        present.append(has)
    return np.stack(images), np.stack(targets), np.stack(present)


class _WorkerBatches(torch.utils.data.IterableDataset):
    """An endless stream of batches; each DataLoader worker draws its own, seeded by its id."""

    def __init__(
        self, sampler: PatchSampler, augmentation: AugmentConfig, strength: float, batch_size: int, seed: int,
        start_step: int, lesion_sim: LesionSimConfig | None, synthesiser: Synthesiser | None, stream: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.sampler, self.augmentation, self.strength, self.batch_size = sampler, augmentation, strength, batch_size
        self.seed, self.start_step, self.lesion_sim, self.synthesiser = seed, start_step, lesion_sim, synthesiser
        self.stream = stream

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        entropy = [self.seed, self.start_step, worker] + ([self.stream] if self.stream else [])
        torch.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
        torch.set_num_threads(1)
        rng = np.random.default_rng(entropy)
        while True:
            yield make_batch(
                self.sampler, self.augmentation, self.strength, self.batch_size, rng, self.lesion_sim, self.synthesiser
            )


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
    lesion_sim: LesionSimConfig | None = None,
    synthesiser: Synthesiser | None = None,
    stream: int = 0,
) -> Generator[tuple[torch.Tensor, ...], None, None]:
    """Endless training batches as CPU tensors (see :data:`Batch`): from ``rng`` in this process
    (``workers`` 0), else from ``workers`` DataLoader processes seeded by ``seed``, ``start_step`` and their id
    (``rng`` is then not used; ``pin_memory`` pins them for a faster copy to a GPU). ``augmentation``: which
    transforms and ranges (default :class:`AugmentConfig`), scaled by ``strength``; ``lesion_sim``: simulated
    lesion changes before augmentation (off when None); ``synthesiser``: generated patches (off when None);
    ``stream``: another worker seed stream (the training process's rank: ranks draw different patches)."""
    augmentation = augmentation or AugmentConfig()
    if workers <= 0:
        while True:
            batch = make_batch(sampler, augmentation, strength, batch_size, rng, lesion_sim, synthesiser)
            yield tuple(torch.from_numpy(a) for a in batch)
    loader = torch.utils.data.DataLoader(
        _WorkerBatches(sampler, augmentation, strength, batch_size, seed, start_step, lesion_sim, synthesiser,
                       stream),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4, pin_memory=pin_memory,
    )  # fmt: skip
    yield from loader
