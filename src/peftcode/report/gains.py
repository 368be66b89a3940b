"""Our relative gains set beside the study's claimed ranges: a description of where a number falls, not a
test (the tests are :mod:`peftcode.report.claims`')."""

from __future__ import annotations


def relative_gain(ours: float, baseline: float) -> float | None:
    """Relative improvement of ``ours`` over ``baseline`` in percent; None when the baseline is zero."""
    return None if baseline == 0 else 100 * (ours - baseline) / baseline


def position(value: float | None, expected: list[float]) -> str:
    """Where a relative gain falls against the study's range (a description, not a test)."""
    if value is None:
        return "not comparable (our baseline scores 0)"
    low, high = expected
    if low <= value <= high:
        return "inside its range"
    if (value > 0) == (low > 0):
        return "in its direction, outside its range"
    return "against its direction"


def gain_text(gain: float | None) -> str:
    return "n/a (baseline is 0)" if gain is None else f"{gain:+.1f}%"
