import numpy as np
import pytest

from peftcode.evaluation.stats import bootstrap_corpus_ci, bootstrap_mean_ci, mcnemar_exact


def test_bootstrap_interval_contains_the_estimate_and_shrinks_as_the_test_set_grows():
    rng = np.random.default_rng(1)
    widths = []
    for n in (20, 80, 320, 1280):
        hits = rng.random(n) < 0.3
        low, high = bootstrap_mean_ci(hits, samples=2000)
        assert low <= hits.mean() <= high
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] < widths[0] / 4  # ~1/sqrt(n): 64x the examples, about 1/8 the width


def test_bootstrap_interval_of_a_constant_is_a_point():
    assert bootstrap_mean_ci([1.0] * 10) == (1.0, 1.0)


def test_corpus_bootstrap_recomputes_the_metric_per_resample():
    references = np.array(["a", "b", "c", "d"] * 10)
    predictions = np.array(["a", "x", "c", "y"] * 10)

    def share_equal(rows):
        return float(np.mean(references[rows] == predictions[rows]))

    low, high = bootstrap_corpus_ci(len(references), share_equal, samples=500)
    assert low < 0.5 < high and 0.2 < low and high < 0.8


def test_mcnemar_exact_matches_the_binomial_test_on_discordant_pairs():
    # 10 discordant pairs split 9 to 1: p = 2 * P(X <= 1), X ~ Binomial(10, 0.5) = 2 * 11 / 1024
    first = [True] * 9 + [False] + [True] * 5
    second = [False] * 9 + [True] + [True] * 5
    assert mcnemar_exact(first, second) == pytest.approx(22 / 1024)
    assert mcnemar_exact(first, first) == 1.0
    assert mcnemar_exact([True, False], [False, True]) == 1.0
