"""Temperature scaling (Guo et al. 2017): one temperature per head, fitted on validation patients."""

from __future__ import annotations

import numpy as np

__all__ = ["fit_temperature"]


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T minimising the binary cross-entropy of sigmoid(logits / T) against ``labels``
    (Guo et al. 2017), found by a bounded 1-D search over log T.

    Raises:
        ValueError: empty input, shapes differ, or the labels hold a single class.
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if z.size == 0 or z.shape != y.shape:
        raise ValueError(f"fit_temperature: expected matching non-empty logits and labels, got {z.shape}, {y.shape}")
    if y.all() or not y.any():
        raise ValueError("fit_temperature: the labels hold a single class; the temperature is not identifiable")
    sign = np.where(y, 1.0, -1.0)

    def nll(log_t: float) -> float:
        # -log sigmoid(s z / T) = softplus(-s z / T), computed stably
        return float(np.logaddexp(0.0, -sign * z / np.exp(log_t)).mean())

    result = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                             options={"xatol": 1e-4})  # fmt: skip
    return float(np.exp(result.x))
