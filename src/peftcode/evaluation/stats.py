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


def paired_permutation_p(first: Sequence[float], second: Sequence[float], draws: int = 10000, seed: int = 0):
    """Two-sided p-value of a paired sign-flip permutation test on the mean difference (e.g. per-problem
    pass@k of two methods); every flip where there are at most 16 pairs, else ``draws`` random ones."""
    differences = np.asarray(first, dtype=float) - np.asarray(second, dtype=float)
    observed = abs(differences.mean()) - 1e-12
    n = len(differences)
    if n <= 16:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        return float(np.mean(np.abs((signs * differences).mean(axis=1)) >= observed))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(draws, n))
    extreme = int(np.sum(np.abs((signs * differences).mean(axis=1)) >= observed))
    return (extreme + 1) / (draws + 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values tested together (statsmodels' ``multipletests``)."""
    if not len(p_values):
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(list(p_values), method="holm")[1]]


Z = {0.05: 1.959963984540054, 0.8: 0.8416212335729143}  # standard normal quantiles: 1 - alpha/2, power


def mcnemar_examples_needed(difference: float, discordance: float, alpha: float = 0.05, power: float = 0.8):
    """Pairs needed for McNemar's test to detect ``difference`` (p10 - p01) at ``power``, given the share of
    discordant pairs (p10 + p01): Connor (1987), n = (z_a sqrt(psi) + z_b sqrt(psi - d^2))^2 / d^2. None
    where the difference exceeds what that discordance allows."""
    d, psi = abs(difference), discordance
    if d == 0 or d > psi:
        return None
    return math.ceil((Z[alpha] * math.sqrt(psi) + Z[power] * math.sqrt(psi - d * d)) ** 2 / (d * d))


def mcnemar_detectable(examples: int, discordance: float, alpha: float = 0.05, power: float = 0.8):
    """The smallest difference (p10 - p01) that ``examples`` pairs detect at ``power`` with this share of
    discordant pairs (Connor's formula, solved for the difference); None where none up to the discordance
    itself can be."""
    from scipy.optimize import brentq

    psi = discordance

    def shortfall(d: float) -> float:
        return examples * d * d - (Z[alpha] * math.sqrt(psi) + Z[power] * math.sqrt(max(psi - d * d, 0))) ** 2

    if psi <= 0 or shortfall(psi) < 0:
        return None
    return float(brentq(shortfall, 1e-9, psi))
