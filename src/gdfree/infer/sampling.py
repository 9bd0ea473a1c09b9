"""Sampled predictions: MC dropout passes, ensemble members and test-time flips, alone or combined.

Each ensemble member is applied with its own temperatures (fitted on its own validation patients).

MC dropout puts only the dropout layers in training mode (normalisation layers stay in eval mode), so each
pass samples channel-wise dropout masks of the decoder and nothing else changes. A model without active
dropout, or whose passes come out identical (an export that dropped dropout), is refused: it would report
zero uncertainty that means nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from gdfree.models.forward import predict_volume, predict_volume_samples

__all__ = ["FLIPS", "MC_LAYERS", "dropout_layers", "sample_predictions"]

MC_LAYERS = ("all", "last")

FLIPS: tuple[tuple[int, ...], ...] = tuple(
    combo for r in range(4) for combo in itertools.combinations((0, 1, 2), r)
)  # (), (0,), (1,), (2,), (0, 1), ... (0, 1, 2): the 8 mirrorings of the three axes


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The model's dropout layers with a probability above 0."""
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


def sample_predictions(
    models: Sequence[nn.Module],
    image: np.ndarray,
    device: str | torch.device = "cpu",
    *,
    mc: int = 0,
    flips: bool = False,
    temperatures: Sequence[float | Sequence[float]] | None = None,
    seed: int = 0,
    cheap: bool = True,
    mc_layers: str = "all",
    expectation: bool = False,
) -> np.ndarray:
    """Probability samples of one (C, X, Y, Z) image, shape (S, H, X, Y, Z) float32 (S + 1 with ``expectation``).

    Args:
        models: one model, or the members of an ensemble (each contributes its own samples).
        mc: MC dropout passes per model and flip (0: one deterministic pass).
        flips: also predict the 8 mirrorings of the image (flipped back before stacking).
        temperatures: one per model, dividing that model's logits (one value, or one per head); default 1.
        seed: seeds torch for the dropout masks, so a prediction is reproducible.
        cheap: MC samples share one encoder pass (:func:`gdfree.models.forward.predict_volume_samples`); the
            samples equal full passes (False) for the same seed.
        mc_layers: ``all`` dropout layers sample (MC dropout as trained), or only the ``last`` one (everything
            before it runs once: about the cost of one pass; a narrower estimate, see docs/uncertainty.md).
        expectation: one more row after the samples, the prediction they scatter around: the mean over models and
            flips of each one's expected probability, which for a network whose only dropout is its head dropout
            is its deterministic pass (the mean sample logit, exactly; the mean sample probability is lower where
            it is high) and otherwise the mean of its samples. The masks are drawn from this row: thresholds are
            fitted on deterministic passes.

    Raises:
        ValueError: no model; not one temperature per model; ``mc`` > 0 for a model without dropout or whose
            passes all came out identical.
    """
    if not models:
        raise ValueError("sample_predictions: no model given")
    temps = [1.0] * len(models) if temperatures is None else list(temperatures)
    if mc_layers not in MC_LAYERS:
        raise ValueError(f"mc_layers: expected one of {', '.join(MC_LAYERS)}, got {mc_layers!r}")
    if len(temps) != len(models):
        raise ValueError(f"sample_predictions: {len(temps)} temperatures for {len(models)} models")
    torch.manual_seed(seed)
    flip_set = FLIPS if flips else ((),)
    per_model = len(flip_set) * max(mc, 1)
    heads = [len(getattr(m, "heads", ())) for m in models]
    stack = np.empty((len(models) * per_model + expectation, heads[0], *image.shape[1:]), np.float32) if (
        heads[0] and len(set(heads)) == 1) else None  # fmt: skip
    samples: list[np.ndarray] = []
    expected: list[np.ndarray] = []
    for k, (model, temperature) in enumerate(zip(models, temps, strict=True)):
        model.eval()
        if mc > 0:
            layers = dropout_layers(model)
            if not layers:
                raise ValueError(f"model {k}: no dropout layer with p > 0, so MC dropout cannot sample; "
                                 "use flips or an ensemble")  # fmt: skip
            for layer in layers if mc_layers == "all" else layers[-1:]:
                layer.train()
        first = len(samples)
        try:
            for axes in flip_set:
                _flip_samples(model, image, axes, device, temperature, mc, cheap and mc > 1, mc_layers, stack, samples,
                              expected if expectation else None)  # fmt: skip
        finally:
            model.eval()
        if mc > 1 and all(np.array_equal(samples[first], s) for s in samples[first + 1 : first + mc]):
            raise ValueError(f"model {k}: {mc} MC dropout passes are identical; its dropout does not act "
                             "(an export may have removed it)")  # fmt: skip
    if expectation:
        mean = np.mean(expected, axis=0, dtype=np.float32)
        if stack is None:
            return np.stack([*samples, mean])
        stack[-1] = mean
    return stack if stack is not None else np.stack(samples)


def _flip_samples(
    model: nn.Module, image: np.ndarray, axes: tuple[int, ...], device: str | torch.device,
    temperature: float | Sequence[float], mc: int, shared_pass: bool, mc_layers: str, stack: np.ndarray | None,
    samples: list[np.ndarray], expected: list[np.ndarray] | None,
) -> None:  # fmt: skip
    """Append ``max(mc, 1)`` samples of ``model`` on ``image`` mirrored along ``axes`` (flipped back) to ``samples``,
    written into the next rows of ``stack`` when there is one, and their expectation to ``expected`` when given."""
    flipped = np.flip(image, axis=tuple(a + 1 for a in axes)).copy() if axes else image
    into = None if stack is None else stack[len(samples) : len(samples) + max(mc, 1)]
    shared = predict_volume_samples(model, flipped, mc, device, temperature=temperature, layers=mc_layers, into=into,
                                    expectation=expected is not None) if shared_pass else None  # fmt: skip
    group = len(samples)
    for n in range(max(mc, 1)):
        prob = shared[n] if shared is not None else predict_volume(model, flipped, device, temperature=temperature)
        prob = np.flip(prob, axis=tuple(a + 1 for a in axes)).copy() if axes else prob
        if stack is not None:
            stack[len(samples)] = prob
            prob = stack[len(samples)]
        samples.append(prob)
    if expected is not None and shared is not None:  # the shared pass's expectation, flipped back
        expected.append(np.flip(shared[-1], axis=tuple(a + 1 for a in axes)) if axes else shared[-1])
    elif expected is not None:
        expected.append(np.asarray(np.mean(samples[group:], axis=0, dtype=np.float32)))
