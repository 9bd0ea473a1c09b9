"""The training config: one frozen dataclass tree, loaded from YAML, saved resolved in every run folder.

Example (``train.yaml``)::

    datasets:
      - {path: cohort, labels: [enhancing, lesion]}      # a Gd cohort with both labels
      - {path: msseg2016, format: auto, labels: [lesion]} # a public challenge: all-lesion masks only
    modalities: [T1w, T2w, FLAIR]
    max_steps: 2000
    split: {val_fraction: 0.2, test_fraction: 0.2, seed: 0}
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gdfree.data.augment import AugmentConfig
from gdfree.data.cases import NORMALISATION, check_normalisation
from gdfree.data.generative import GenerativeConfig
from gdfree.data.lesion_sim import LesionSimConfig
from gdfree.data.sampling import SamplingRatios
from gdfree.models.unet import DROPOUT_SITES
from gdfree.train.losses import LOSSES
from gdfree.train.translation import TranslationConfig
from gdfree.types import PAIR_ROLES, check_input_modalities

__all__ = ["HEADS", "DatasetSpec", "SplitConfig", "TrainConfig"]

HEADS = ("enhancing", "lesion", "new", "t1gd")
KEEP = ("last", "best")
NORMS = ("instance", "batch")


@dataclass(frozen=True)
class DatasetSpec:
    """One training dataset and the labels it provides (a head it lacks contributes no loss).

    ``share``: the fraction of training patches drawn from this dataset's cases (in every sampling category
    the dataset has: a dataset without enhancing labels gives no active patch); datasets without one split
    what is left in proportion to their case counts. None everywhere: every training case is equally likely
    (two real exams beside 36 phantoms would then get 1 patch in 19).

    ``pairs``: the folder ``gdfree pair`` wrote for this dataset; its follow-up sessions get the prior-exam input
    channels (:data:`gdfree.types.PAIR_ROLES`, which ``modalities`` must then list), the others read "no prior"."""

    path: str
    format: str = "auto"
    labels: tuple[str, ...] = HEADS
    share: float | None = None
    pairs: str = ""

    def __post_init__(self) -> None:
        bad = [lab for lab in self.labels if lab not in HEADS]
        if bad:
            raise ValueError(f"datasets[{self.path}].labels: unknown {bad}; expected some of {', '.join(HEADS)}")
        if self.share is not None and not 0 < self.share <= 1:
            raise ValueError(f"datasets[{self.path}].share: expected a fraction in (0, 1], got {self.share}")


@dataclass(frozen=True)
class SplitConfig:
    """Patient-level split. Held-out test patients first (``test_subjects`` or ``test_fraction``), then
    named validation patients (``val_subjects``), a validation fraction or, with ``n_folds`` > 1, fold
    ``fold`` of k folds; ``train_subjects`` restricts training to those patients (the others are unused).
    Subjects are named ``<dataset path>:<subject>`` as in ``split.json``."""

    val_fraction: float = 0.2
    test_fraction: float = 0.2
    n_folds: int = 0
    fold: int = 0
    test_subjects: tuple[str, ...] = ()
    val_subjects: tuple[str, ...] = ()
    train_subjects: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise ValueError("split: val_fraction and test_fraction must be in [0, 1)")
        if self.n_folds and not 0 <= self.fold < self.n_folds:
            raise ValueError(f"split.fold: expected 0..{self.n_folds - 1}, got {self.fold}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (see the module docstring for a YAML example).

    Attributes:
        datasets: training datasets with their label sets.
        modalities: input roles in channel order; ``T1gd`` only with ``oracle: true``.
        oracle: the upper-bound reference that also sees the post-Gd T1w. Never a product model.
        heads, head_weights: output heads and their loss weights. ``t1gd`` is the translation head: it
            synthesises the post-Gd T1w (needs ``T1w`` among the inputs); alone it is the stand-alone
            generator, with the segmentation heads the multitask model (:mod:`gdfree.data.translation`).
        translation: the ``t1gd`` head's loss (:class:`gdfree.train.translation.TranslationConfig`).
        channels, strides, num_res_units, dropout, full_res_channels: the MultitaskUNet.
        dropout_site: ``decoder`` (dropout in every decoder block, as before) or ``head`` (one channel-wise dropout
            layer before the 1x1x1 heads: an MC dropout sample then costs a matrix product, not a decoder pass;
            docs/inference.md).
        normalisation: the input normalisation (:data:`gdfree.data.cases.NORMALISATIONS`), recorded in the model
            and applied at prediction.
        norm: ``instance`` (statistics of each input: a whole exam then normalises otherwise than a training
            patch) or ``batch`` (running statistics from training: the prediction of a voxel no longer depends
            on the field of view, so a whole exam, its brain box and tiles agree; docs/inference.md).
        loss: ``dice_ce`` or ``dice_focal``.
        patch_size, batch_size, sampling: patches and their category shares.
        augment: augmentation strength, scaling every range of ``augmentation`` (0 = none).
        augmentation: which TorchIO transforms fire how often, and their ranges (:class:`AugmentConfig`);
            parameters are drawn from the training generator and replayable.
        lesion_sim: lesion simulation in training patches (CarveMix, parametric insertion, removal by
            inpainting; :class:`gdfree.data.lesion_sim.LesionSimConfig`), before augmentation. Off by default.
        generative: a cVAE or cGAN trained on the training patients before the network, whose patches
            replace a share of training patches (:class:`gdfree.data.generative.GenerativeConfig`). Off by default.
        workers: DataLoader processes that draw and augment batches while the network steps (0: in the
            training process, exactly resumable; see :mod:`gdfree.data.loader`).
        cache: a folder for the preprocessed training cache (decompressed, memory-mapped arrays shared by every
            process on the machine; :mod:`gdfree.data.cache`); empty: cases are read into memory each run.
        amp: bfloat16 autocast of the forward pass on CUDA (no effect on a CPU; may change on --resume).
        cpu_bf16: bfloat16 autocast with channels-last tensors on a CPU with bfloat16 units (AVX512-BF16 or AMX;
            float32 elsewhere): measured 2x a float32 step of the default network at 4 x 48^3 (docs/inference.md);
            off by default until the time to a validation Dice is measured with it.
        channels_last: float32 steps with channels-last tensors (the CPU's convolutions run faster in it: 1.3x a
            step of the default network at 4 x 48^3 and 1.19x a whole training on an AVX-512 CPU,
            docs/inference.md); another summation order, so off by default (the golden test's numbers).
        lr, weight_decay, warmup_steps, max_steps, time_budget_s: AdamW with linear warm-up then cosine
            decay over ``max_steps``; training also stops after ``time_budget_s`` seconds if > 0.
        val_every: steps between full-volume validations (lesion F1 and patient AUC on validation patients).
        keep: which checkpoint becomes ``model.*``: ``last`` (the final weights, as nnU-Net keeps; default) or
            ``best`` (the best validation score). Both are also written as ``last.*`` and ``best.*``. With a
            handful of validation patients the best score is mostly noise: on the 50-subject signal-curve
            cohort the best of six validations on 6 patients tested at lesion F1 0.24 where the final
            weights reached 0.39 (docs/signal_curve.md).
        snapshots: also keep the weights of every validation as ``step-NNNNNN.*`` (learning curves on other
            data, e.g. ``benchmarks/real_lesions.py curve``); off by default.
        prior_dropout: with prior-exam channels among ``modalities``, the share of training patches from exams
            with a prior that are drawn as if without one (:class:`gdfree.data.loader.PriorDropout`): the model
            learns the single-exam mode on the same exams, not only on first sessions.
        pair_artefacts: with prior-exam channels, the share of training patches whose prior gets a real pair's
            residual errors (misalignment, another slice profile, an intensity mismatch) and whose difference
            channel the same change (:mod:`gdfree.data.pair_artefacts`); 0 (default) draws none.
        randomise_labels: the label-randomisation control of attribution sanity checks (Adebayo et al.
            2018): every training and validation case gets the enhancing label of another case (a seeded
            derangement; the cases must share one grid). Never a product model.
        seed: seeds numpy (sampling, augmentation) and torch (weights, dropout).
        init: a trained run folder whose ``model.*`` weights start this run instead of random ones
            (fine-tuning, e.g. a model trained on the synthetic cohort, then on real exams). Its network,
            heads, input modalities and ``oracle`` must equal this config's, and none of this run's test
            cases may have been its training or validation data (checked by input-file fingerprints). The
            optimiser and schedule start afresh; ``model.json`` records the folder and its weights' SHA-256.
    """

    datasets: tuple[DatasetSpec, ...] = ()
    modalities: tuple[str, ...] = ("T1w", "T2w", "FLAIR")
    oracle: bool = False
    heads: tuple[str, ...] = ("enhancing", "lesion")
    head_weights: tuple[float, ...] = (1.0, 0.3)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    dropout: float = 0.1
    full_res_channels: int = 8
    dropout_site: str = "decoder"
    norm: str = "instance"
    normalisation: str = NORMALISATION
    loss: str = "dice_ce"
    patch_size: int = 48
    batch_size: int = 4
    sampling: SamplingRatios = field(default_factory=SamplingRatios)
    augment: float = 1.0
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    lesion_sim: LesionSimConfig = field(default_factory=LesionSimConfig)
    generative: GenerativeConfig = field(default_factory=GenerativeConfig)
    translation: TranslationConfig = field(default_factory=TranslationConfig)
    workers: int = 0
    cache: str = ""
    amp: bool = True
    cpu_bf16: bool = False
    channels_last: bool = False
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    max_steps: int = 2000
    time_budget_s: float = 0.0
    val_every: int = 100
    keep: str = "last"
    snapshots: bool = False
    prior_dropout: float = 0.3
    pair_artefacts: float = 0.0
    randomise_labels: bool = False
    seed: int = 0
    init: str = ""
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", check_input_modalities(self.modalities, oracle=self.oracle))
        if self.oracle and "T1gd" not in self.modalities:
            raise ValueError("oracle: true is only for a model that also receives T1gd; add it to modalities")
        if len(self.head_weights) != len(self.heads) or any(h not in HEADS for h in self.heads):
            raise ValueError(f"heads/head_weights: expected matching lists of {', '.join(HEADS)}")
        if "t1gd" in self.heads:
            if "T1w" not in self.modalities:
                raise ValueError("heads: the t1gd head synthesises the post-Gd T1w from the T1w; add T1w to modalities")
            if self.lesion_sim.probability > 0 or self.generative.kind != "none" or self.randomise_labels:
                raise ValueError(
                    "heads: the t1gd head cannot be trained with lesion_sim, generative or "
                    "randomise_labels (they change labels without changing its target image)"
                )
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {self.loss!r}")
        divisor = 1
        for s in self.strides:
            divisor *= s
        if self.patch_size % divisor:
            raise ValueError(f"patch_size: {self.patch_size} must be a multiple of the strides' product {divisor}")
        check_normalisation(self.normalisation)
        shares = [d.share for d in self.datasets if d.share is not None]
        if sum(shares) > 1 + 1e-9 or (shares and len(shares) == len(self.datasets) and abs(sum(shares) - 1) > 1e-6):
            raise ValueError(f"datasets: shares {shares} must sum to 1 (at most 1 when some datasets have none)")
        if any(d.pairs for d in self.datasets) and not set(PAIR_ROLES) <= set(self.modalities):
            raise ValueError(f"datasets: pairs given, but modalities lack the prior-exam channels {list(PAIR_ROLES)}")
        changes_flair = self.lesion_sim.probability > 0 or self.generative.kind != "none"
        if set(PAIR_ROLES) & set(self.modalities) and changes_flair:
            raise ValueError("lesion_sim and generative change the FLAIR of a patch but not its prior-exam channels "
                             f"({', '.join(PAIR_ROLES)}); turn them off for a model with those inputs")
        if not 0 <= self.prior_dropout < 1:
            raise ValueError(f"prior_dropout: expected a fraction in [0, 1), got {self.prior_dropout}")
        if not 0 <= self.pair_artefacts <= 1:
            raise ValueError(f"pair_artefacts: expected a probability in [0, 1], got {self.pair_artefacts}")
        if self.norm not in NORMS:
            raise ValueError(f"norm: expected one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.dropout_site not in DROPOUT_SITES:
            raise ValueError(f"dropout_site: expected one of {', '.join(DROPOUT_SITES)}, got {self.dropout_site!r}")
        if self.keep not in KEEP:
            raise ValueError(f"keep: expected one of {', '.join(KEEP)}, got {self.keep!r}")
        if self.workers < 0:
            raise ValueError(f"workers: expected >= 0, got {self.workers}")
        if self.max_steps < 1 or self.batch_size < 1 or self.val_every < 1:
            raise ValueError("max_steps, batch_size and val_every must be >= 1")
