"""The study's claims, and each one's standing in a run.

A claim is tested on two cells' paired outcomes on the same test set, under the test set's primary
metric: an exact McNemar test where each example is a pass or a miss (EM@k, greedy pass@1), a paired
sign-flip permutation test over problems where it is an estimate (sampled pass@k). The claims of one report
are corrected together (Holm). A claim's standing is then:
- agrees: significant after the correction, in the study's direction;
- disagrees: significant, against it (for a claim of no difference, any significant difference);
- inconclusive: not significant; the report says what it would take (the smallest difference this test set
  detects at 80% power, and the test-set size that would detect the study's own claimed effect);
- cannot be tested: no cells to compare, or both score 0 on every example.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib.resources import files

import numpy as np
import pandas as pd
import yaml

from peftcode.evaluation import stats
from peftcode.report.gains import gain_text, position, relative_gain
from peftcode.report.tables import per_example, with_ci

PAPER = yaml.safe_load(files("peftcode.report").joinpath("paper_claims.yaml").read_text())
ALPHA, POWER = 0.05, 0.8
SOURCES = {"secondary": "a secondary summary's figure, not found in the paper's text we checked"}


def finding_lines(claim: str) -> list[str]:
    entry = PAPER[claim]
    lines = [f"The study finds ({entry['source']}): {entry['finding']}"]
    if "check" in entry:
        lines.append(f"Checked as {entry['check']['text']} ({entry['check']['source']}).")
    return lines


@dataclass
class Comparison:
    """``ours`` against ``baseline`` (rows of the results table) on ``metric``; ``expects`` is the study's
    direction: ``gain`` (ours better) or ``same`` (no difference). ``hours`` is the plan's GPU-hours of the
    two cells, where it has them."""

    title: str
    ours: pd.Series
    baseline: pd.Series
    metric: str
    claim: str | None
    expects: str = "gain"
    hours: float | None = None
    p_adjusted: float = field(init=False, default=math.nan)
    tested_with: int = field(init=False, default=1)

    def __post_init__(self):
        first, binary = per_example(self.ours, self.metric)
        second, _ = per_example(self.baseline, self.metric)
        self.first, self.second, self.binary = np.array(first), np.array(second), binary
        self.n = len(first)
        self.difference = float(self.first.mean() - self.second.mean()) if self.n else 0.0
        same_examples = len(first) == len(second) and self.n > 0
        self.testable = same_examples and not (np.all(self.first == self.second) and self.second.sum() == 0)
        if not self.testable:
            self.p = math.nan
        elif binary:
            self.p = stats.mcnemar_exact(self.first > 0, self.second > 0)
        else:
            self.p = stats.paired_permutation_p(self.first, self.second)

    @property
    def test_name(self) -> str:
        unit = "example" if self.metric.startswith("em@") else "problem"
        kind = "exact McNemar test" if self.binary else "paired permutation test"
        return f"{kind} on per-{unit} {self.metric}"

    @property
    def standing(self) -> str:
        if not self.testable:
            return "cannot be tested"
        if self.p_adjusted >= ALPHA:
            return "inconclusive"
        if self.expects == "gain":
            return "agrees" if self.difference > 0 else "disagrees"
        return "disagrees"

    def detectable(self) -> float | None:
        """The smallest difference this test set detects at 80% power."""
        if self.binary:
            return stats.mcnemar_detectable(self.n, self._discordance())
        spread = float(np.std(self.first - self.second, ddof=1)) if self.n > 1 else 0.0
        return (stats.Z[ALPHA] + stats.Z[POWER]) * spread / math.sqrt(self.n) if spread > 0 else None

    def needed(self, difference: float) -> int | None:
        """Test examples that would detect ``difference`` at 80% power, the pairs' spread as observed."""
        if self.binary:
            psi = max(self._discordance(), abs(difference))
            return stats.mcnemar_examples_needed(difference, psi)
        spread = float(np.std(self.first - self.second, ddof=1)) if self.n > 1 else 0.0
        if spread == 0 or difference == 0:
            return None
        return math.ceil(((stats.Z[ALPHA] + stats.Z[POWER]) * spread / difference) ** 2)

    def _discordance(self) -> float:
        """The share of discordant pairs; where there are none, what independent outcomes would give."""
        hits, misses = self.first > 0, self.second > 0
        observed = float(np.mean(hits != misses)) if self.n else 0.0
        p, q = hits.mean(), misses.mean()
        return observed if observed > 0 else float(p * (1 - q) + q * (1 - p))

    def claimed_difference(self) -> tuple[float, str] | None:
        """The study's effect in this run's terms: its smallest claimed relative gain over our baseline's
        score, or, where it claims a direction only, the difference observed in that direction."""
        claimed = (PAPER.get(self.claim) or {}).get("range") if self.claim else None
        base = float(self.second.mean())
        if claimed and base > 0:
            low = claimed["relative_gain"][0]
            return base * low / 100, f"the study's smallest claimed gain ({low:g}% relative)"
        if self.expects == "gain" and self.difference > 0:
            return self.difference, "the difference observed here"
        return None

    def lines(self) -> list[str]:
        ours, base = self.ours, self.baseline
        gain = relative_gain(ours[self.metric], base[self.metric])
        said = (
            f"{self.title}: {ours['variant']} ({ours['model']}) reaches {self.metric} "
            f"{with_ci(ours, self.metric)} against {with_ci(base, self.metric)} for {base['variant']} "
            f"({base['model']}), {gain_text(gain)} relative"
        )
        if self.testable:
            said += (
                f"; {self.test_name}: p = {self.p:.3g}, {self.p_adjusted:.3g} after Holm's correction for "
                f"the {self.tested_with} claim{'s' if self.tested_with != 1 else ''} tested in this report."
            )
        else:
            said += "; both score 0 on every example, so no test can tell them apart."
        checked = "a gain" if self.expects == "gain" else "no difference between the two"
        lines = [said, *(finding_lines(self.claim) if self.claim else [f"Checked as {checked} (ours)."])]
        claimed = (PAPER.get(self.claim) or {}).get("range") if self.claim else None
        if claimed:
            source = SOURCES.get(claimed["source"], claimed["source"])
            lines.append(
                f"A range, {claimed['text']} ({source}): ours {gain_text(gain)}, "
                f"{position(gain, claimed['relative_gain'])}."
            )
        lines.append(f"Standing: **{self.standing}**.")
        if self.standing == "inconclusive":
            lines.append(self.what_it_would_take())
        return [*lines, ""]

    def what_it_would_take(self) -> str:
        detectable = self.detectable()
        text = f"What it would take: these {self.n} test examples"
        if self.binary:
            text += f", {self._discordance():.0%} of them discordant,"
        found = "no difference" if detectable is None else f"a difference of {detectable:.3f} or more"
        text += f" detect {found} at 80% power"
        claimed = self.claimed_difference()
        if claimed is None:
            return (
                text + "; the run shows no difference in the study's direction to size a larger test set by."
            )
        difference, what = claimed
        needed = self.needed(difference)
        if needed is None:
            return text + f"; {what} ({difference:.3f}) cannot be sized from these outcomes."
        text += f"; {what}, {difference:.3f}, would take about {needed} test examples"
        if self.hours is not None and self.n:
            text += (
                f" (the plan: {self.hours:.2g} device-hours for the two cells at {self.n} examples, their "
                "inference growing in proportion)"
            )
        return text + "."


@dataclass
class Untested:
    """A claim the run has no cells for."""

    claim: str
    why: str

    standing = "cannot be tested"

    def lines(self) -> list[str]:
        return [*finding_lines(self.claim), f"Standing: **cannot be tested** ({self.why}).", ""]


def render(body: list) -> list[str]:
    """A report's lines, its comparisons settled together: Holm's correction over those tested."""
    compared = [item for item in body if isinstance(item, Comparison) and item.testable]
    for item, adjusted in zip(compared, stats.holm([c.p for c in compared]), strict=True):
        item.p_adjusted, item.tested_with = adjusted, len(compared)
    lines = []
    for item in body:
        lines += item.lines() if isinstance(item, Comparison | Untested) else [item]
    return lines
