"""Scores of ranked candidates and of sampled programs: EM@k from each example's match rank, and the
unbiased pass@k estimator. Pure functions, shared by the evaluation and the reports."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from peftcode.evaluation.stats import bootstrap_mean_ci


def normalise(code: str) -> str:
    """Code with every run of whitespace collapsed to one space, for exact-match comparison."""
    return " ".join(code.split())


def match_ranks(references: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[int]:
    """Per example, the 0-based rank of the first candidate equal to the reference after whitespace
    normalisation, or -1 when none is."""
    ranks = []
    for reference, ranked in zip(references, candidates, strict=True):
        target = normalise(reference)
        ranks.append(next((i for i, c in enumerate(ranked) if normalise(c) == target), -1))
    return ranks


def hits_at_k(ranks: Sequence[int], k: int) -> list[bool]:
    return [0 <= rank < k for rank in ranks]


def exact_match_at_k(ranks: Sequence[int], ks: Sequence[int], bootstrap_samples: int) -> dict[str, float]:
    """EM@k for each k, the share of examples whose reference is among their first k candidates (from
    :func:`match_ranks`), with its 95% bootstrap interval over the examples."""
    scores = {}
    for k in ks:
        hits = hits_at_k(ranks, k)
        low, high = bootstrap_mean_ci(hits, bootstrap_samples)
        scores.update({f"em@{k}": sum(hits) / len(hits), f"em@{k}_ci_low": low, f"em@{k}_ci_high": high})
    return scores


def pass_at_k(samples: int, correct: int, k: int) -> float:
    """The unbiased estimator of pass@k (Chen et al., 2021) from ``samples`` programs of which ``correct``
    pass: 1 - C(n - c, k) / C(n, k), as a product that stays exact for large n."""
    if k > samples:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {samples}")
    if samples - correct < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(samples - correct + 1, samples + 1)))
