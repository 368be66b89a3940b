"""Uncertainty of the study's numbers: bootstrap confidence intervals over test examples, and a paired test
between two methods on the same test set."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def bootstrap_indices(n: int, samples: int, seed: int = 0) -> np.ndarray:
    """``samples`` resamples of ``n`` test examples with replacement, one row each."""
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def percentile_interval(estimates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean_ci(
    values: Sequence[float], samples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-example values (e.g. EM@k hits)."""
    values = np.asarray(values, dtype=float)
    means = values[bootstrap_indices(len(values), samples, seed)].mean(axis=1)
    return percentile_interval(means, level)


def bootstrap_corpus_ci(
    examples: int,
    metric: Callable[[np.ndarray], float],
    samples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a corpus-level metric (e.g. CodeBLEU), recomputed per resample:
    ``metric`` scores the examples at the resample's indices (with repeats)."""
    estimates = np.array([metric(rows) for rows in bootstrap_indices(examples, samples, seed)])
    return percentile_interval(estimates, level)


def mcnemar_exact(first: Sequence[bool], second: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value for paired binary outcomes (e.g. EM@1 of two methods per example)."""
    first, second = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    only_first = int(np.sum(first & ~second))
    only_second = int(np.sum(~first & second))
    discordant = only_first + only_second
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, i) for i in range(min(only_first, only_second) + 1)) / 2**discordant
    return min(1.0, 2 * tail)
