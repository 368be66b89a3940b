"""Reports built from a small synthetic results table."""

import re

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from peftcode.evaluation import stats
from peftcode.report.claims import Comparison, render
from peftcode.report.gains import position, relative_gain
from peftcode.report.report import write_reports
from peftcode.report.tables import primary_metric
from tests.helpers import row


@pytest.fixture
def table():
    n = 20
    return pd.DataFrame(
        [
            row("lora", "lora", [0] * 12 + [-1] * 8, memory=2000.0),  # EM@1 0.6
            row("qlora-4bit", "qlora-4bit", [0] * 10 + [-1] * 10, memory=1000.0),  # EM@1 0.5
            row("qlora-8bit", "qlora-8bit", [0] * 11 + [-1] * 9, memory=1500.0),  # EM@1 0.55
            row("ia3", "ia3", [0] * 4 + [3] * 4 + [-1] * 12, memory=1900.0),  # EM@1 0.2, EM@10 0.4
            row("full-ft", "full-ft", [0] * 8 + [-1] * 12, memory=3000.0),  # EM@1 0.4
            row("icl-0shot", "icl", [-1] * n, shots=0, seed=42),
            row("icl-1shot-seed42", "icl", [0] * 2 + [-1] * 18, shots=1, seed=42),
            row("icl-1shot-seed777", "icl", [0] * 4 + [-1] * 16, shots=1, seed=777),
            row("rag-1shot", "rag", [0] * 5 + [-1] * 15, shots=1),  # EM@1 0.25
            row("rag-3shot", "rag", [0] * 8 + [-1] * 12, shots=3),  # EM@1 0.4
            row("lora-joint", "lora", [0] * 11 + [-1] * 9, memory=2000.0, joint="joint"),  # EM@1 0.55
        ]
    )


def test_reports_hold_the_numbers_intervals_tests_and_paper_claims(table, tmp_path):
    write_reports(table, tmp_path)
    rq1 = (tmp_path / "rq1.md").read_text()
    assert "| llm     | lora       | 0.600 [0.500, 0.700]" in rq1
    assert "Judged by em@10." in rq1
    # lora 0.6 vs full-ft 0.4 on EM@10: +50% relative, inside the paper's 39.8-72.3% range
    assert "+50.0% relative" in rq1
    # The qualitative finding first, with its source; the number's range with where ours falls.
    assert "The study finds (findings): LoRA-, IA3- and prompt-tuned LLMs outperform" in rq1
    assert "Checked as the best PEFT cell beats the best full fine-tune (ours)." in rq1
    assert "A range, 39.8-72.3% relative EM@k (LoRA) (a secondary summary's figure" in rq1
    assert "+50.0%, inside its range." in rq1
    # 12 vs 8 hits, all of full-ft's hits shared: 4 discordant pairs, p = 2 * (1/16) = 0.125; alone in RQ1.
    assert (
        "exact McNemar test on per-example em@10: p = 0.125, 0.125 after Holm's correction for the 1 " in rq1
    )
    assert "Standing: **inconclusive**." in rq1
    # 20 examples, 4 of them discordant: even 4 of 4 one way would not be significant (p = 0.125), so no
    # difference is detectable; the study's 39.8% over full-ft's 0.4 is 0.159, and Connor's formula with
    # that discordance, (1.96 sqrt(0.2) + 0.8416 sqrt(0.2 - 0.159^2))^2 / 0.159^2 = 59.9, says 60.
    assert "these 20 test examples, 20% of them discordant, detect no difference at 80% power" in rq1
    assert (
        "the study's smallest claimed gain (39.8% relative), 0.159, would take about 60 test examples" in rq1
    )
    rq2 = (tmp_path / "rq2.md").read_text()
    # ICL 1-shot: mean of 0.1 and 0.2 over two seeds, a spread; 0-shot has one seed.
    assert "|       1 |       2 |  0.150 | 0.071    |" in rq2
    assert "|       0 |       1 |  0.000 | one seed |" in rq2
    # lora (0.6) vs best ICL cell (0.2): +200%, above the paper's 22.8-150%
    assert "+200.0% relative" in rq2 and "in its direction, outside its range" in rq2
    assert "| llm     | rag-3shot | conala    | dense       |       3 | em@10    | 0.400" in rq2
    assert "Best PEFT vs best RAG cell: lora (llm) reaches em@10 0.600" in rq2
    assert "after Holm's correction for the 2 claims tested in this report" in rq2
    assert "dense encoder (GTE-small embeddings, cosine similarity), not BM25" in rq2
    rq3 = (tmp_path / "rq3.md").read_text()
    assert "| llm     | lora-joint | conala    | joint       | em@10    | 0.550 [0.450, 0.650]" in rq3
    # 11 vs 12 hits, one discordant pair: p = 1; no significant difference is no agreement either.
    assert "lora-joint (trained on joint) vs lora: lora-joint (llm) reaches em@10 0.550" in rq3
    assert "p = 1, 1 after Holm's correction" in rq3 and "Standing: **inconclusive**." in rq3
    rq4 = (tmp_path / "rq4.md").read_text()
    assert (
        "| llm     | qlora-4bit | 4-bit     | adamw       | yes             |         250 |      1000 |"
        "      500 |" in rq4
    )
    # QLoRA's 1000 MB against LoRA's 2000 MB: half, as the paper says (a measurement, not a test).
    assert "qlora-4bit peaks at 1000 MB, 0.50x lora's 2000 MB (the paper: 0.4-0.6x; ours inside it)" in rq4
    assert "part of the difference is recomputed activations" in rq4
    assert "qlora-8bit peaks at 1500 MB, 0.75x lora's 2000 MB (between LoRA and QLoRA-4bit)" in rq4
    # Two QLoRA-vs-LoRA effectiveness tests in RQ4, corrected together.
    assert "after Holm's correction for the 2 claims tested in this report" in rq4
    # lora's 12 hits against ICL's 4, 8 discordant pairs all lora's: p = 0.0078, 0.0156 after Holm.
    assert "p = 0.00781, 0.0156 after Holm's correction for the 2 claims" in rq2
    assert [standing for _, standing in settled(rq2)] == ["agrees", "inconclusive"]
    for text in (rq1, rq2, rq3, rq4):
        for adjusted, standing in settled(text):
            assert (standing in ("agrees", "disagrees")) == (adjusted < 0.05), (adjusted, standing)
    for name in ("rq1", "rq2", "rq3", "rq4", "figure1_memory"):
        figure = (tmp_path / f"{name}.png").read_bytes()
        assert figure.startswith(b"\x89PNG") and len(figure) > 5000


def settled(report: str) -> list[tuple[float, str]]:
    """Each tested claim of a report: its p-value after Holm's correction, and its standing."""
    adjusted = [float(p) for p in re.findall(r", ([0-9.e-]+) after Holm's correction", report)]
    standings = re.findall(r"Standing: \*\*([a-z ]+)\*\*", report)
    tested = [s for s in standings if s != "cannot be tested"]
    assert len(adjusted) == len(tested)
    return list(zip(adjusted, tested, strict=True))


def standing_of(ours: list[int], baseline: list[int], others: int = 0, expects: str = "gain") -> Comparison:
    """The standing of ours vs baseline (ranks) in a report that tests ``others`` null claims besides."""
    first, second = pd.Series(row("a", "lora", ours)), pd.Series(row("b", "full-ft", baseline))
    comparisons = [Comparison("claim", first, second, "em@1", "rq1", expects)]
    tie = [0] * 10 + [-1] * 10
    comparisons += [
        Comparison(
            "null", pd.Series(row("c", "lora", tie)), pd.Series(row("d", "full-ft", tie[::-1])), "em@1", None
        )
        for _ in range(others)
    ]
    render(comparisons)
    return comparisons[0]


def test_each_standing_from_results_whose_answer_is_known():
    win, loss = [0] * 30 + [-1] * 10, [0] * 5 + [-1] * 35
    assert standing_of(win, loss).standing == "agrees"  # 25 discordant pairs, all ours: p = 6e-8
    assert standing_of(loss, win).standing == "disagrees"
    assert standing_of(win, win).standing == "inconclusive"  # a tie: p = 1
    assert standing_of([-1] * 40, [-1] * 40).standing == "cannot be tested"  # both 0 on every example
    assert (
        standing_of(win, loss, expects="same").standing == "disagrees"
    )  # a difference where none is claimed
    # 8 discordant pairs, all ours: p = 2 / 2**8 = 0.0078, significant alone; with 9 more claims tested
    # at p = 1 in the same report, Holm multiplies the smallest by 10: 0.078, not significant.
    close = [0] * 8 + [-1] * 32
    alone, among = standing_of(close, [-1] * 40), standing_of(close, [-1] * 40, others=9)
    assert alone.p == pytest.approx(2 / 2**8) and alone.standing == "agrees"
    assert among.p_adjusted == pytest.approx(10 * 2 / 2**8) and among.standing == "inconclusive"


def test_holm_and_mcnemar_agree_with_statsmodels():
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.multitest import multipletests

    # Holm by hand: sorted 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06.
    assert stats.holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert stats.holm([0.2, 0.5]) == pytest.approx(list(multipletests([0.2, 0.5], method="holm")[1]))
    first = [True] * 9 + [False] * 3 + [True] * 5 + [False] * 8
    second = [False] * 9 + [True] * 3 + [True] * 5 + [False] * 8
    table = [[5, 9], [3, 8]]  # both, ours only / baseline only, neither
    assert stats.mcnemar_exact(first, second) == pytest.approx(mcnemar(table, exact=True).pvalue)


def test_mcnemar_power_is_connors_and_holds_in_simulation():
    from scipy.stats import binom

    # Connor (1987): n = (1.95996 sqrt(0.3) + 0.84162 sqrt(0.3 - 0.01))^2 / 0.01 = 233.08, rounded up.
    assert stats.mcnemar_examples_needed(0.1, 0.3) == 234
    assert stats.mcnemar_detectable(234, 0.3) == pytest.approx(0.1, abs=0.001)
    assert stats.mcnemar_examples_needed(0.4, 0.3) is None  # more than that discordance allows
    # The exact test at that size, simulated: p10 = 0.2, p01 = 0.1 of 234 pairs, 4000 studies.
    rng = np.random.default_rng(0)
    counts = rng.multinomial(234, [0.2, 0.1, 0.7], size=4000)
    ours, theirs = counts[:, 0], counts[:, 1]
    discordant = ours + theirs
    p = np.minimum(1.0, 2 * binom.cdf(np.minimum(ours, theirs), discordant, 0.5))
    assert 0.75 <= np.mean(p < 0.05) <= 0.85


def test_sampled_pass_at_k_is_compared_by_a_paired_permutation_test():
    def sampled(method, passes):
        cell = row(method, "lora", [-1] * len(passes), dataset="mbpp")
        return pd.Series({**cell, "pass@1": np.mean(passes) / 5, "passes": passes, "pass_samples": 5})

    better, worse = sampled("a", [5, 4, 5, 3, 5, 4, 5, 5]), sampled("b", [1, 0, 2, 0, 1, 1, 0, 2])
    comparison = Comparison("sampled", better, worse, "pass@1", None)
    assert comparison.test_name == "paired permutation test on per-problem pass@1"
    # Every one of 8 problems favours ours: only the two all-same-sign flips reach it, 2 / 2**8.
    assert comparison.p == pytest.approx(2 / 2**8)
    assert stats.paired_permutation_p([0.2] * 4, [0.2] * 4) == 1.0


def test_a_dataset_with_tests_is_judged_by_pass_at_1():
    def greedy(method, passes):
        cell = row(method, method, [-1] * len(passes), dataset="humaneval")
        return {**cell, "pass@1": np.mean(passes), "passes": passes, "pass_samples": 1}

    tests = pd.DataFrame([greedy("lora", [1, 1, 0, 0]), greedy("full-ft", [1, 0, 0, 0])])
    assert primary_metric(tests) == "pass@1"
    comparison = Comparison("greedy", tests.iloc[0], tests.iloc[1], "pass@1", "rq1")
    assert comparison.binary and comparison.test_name == "exact McNemar test on per-problem pass@1"


def test_partial_report_lists_missing_cells_instead_of_failing(table, tmp_path):
    expected = [{"model": "llm", "variant": v, "dataset": "conala"} for v in table["variant"]]
    expected.append({"model": "llm", "variant": "prefix-tuning", "dataset": "conala"})
    partial = table[table["variant"] != "full-ft"]
    write_reports(partial, tmp_path, expected)
    text = (tmp_path / "rq1.md").read_text()
    assert "2 of 12 cells have not finished" in text
    assert "- llm / full-ft / conala" in text and "- llm / prefix-tuning / conala" in text
    assert "Best PEFT vs best full fine-tune" not in text


def test_an_empty_table_still_reports(tmp_path):
    write_reports(pd.DataFrame(), tmp_path, [{"model": "m", "variant": "lora", "dataset": "d"}])
    assert "1 of 1 cells have not finished" in (tmp_path / "rq2.md").read_text()


def test_where_a_gain_falls_against_the_papers_range():
    assert relative_gain(0.6, 0.4) == pytest.approx(50.0) and relative_gain(1, 0) is None
    assert position(50.0, [39.8, 72.3]) == "inside its range"
    assert position(10.0, [39.8, 72.3]) == "in its direction, outside its range"
    assert position(-5.0, [39.8, 72.3]) == "against its direction"


def test_reports_say_when_programs_ran_without_isolation(table, tmp_path):
    table["sandbox"] = None
    table.loc[0, "sandbox"] = "UNSAFE: without kernel isolation"
    write_reports(table, tmp_path)
    for rq in ("rq1", "rq2", "rq3", "rq4"):
        text = (tmp_path / f"{rq}.md").read_text()
        assert "UNSAFE: the pass@k of 1 cells ran model-written programs without kernel isolation" in text
        assert "llm / lora / conala" in text


def test_reports_list_what_does_not_fit_and_rq4_sets_estimates_beside_peaks(table, tmp_path):
    plan = pd.DataFrame(
        [
            {
                "model": "llm",
                "variant": "lora",
                "dataset": "conala",
                "finetune_peak_mb": 1800,
                "infer_peak_mb": 900,
                "finetune_per_gpu_mb": 1800,
                "infer_per_gpu_mb": 900,
                "fits": True,
                "budget_gb": 24,
            },
            {
                "model": "big",
                "variant": "lora",
                "dataset": "conala",
                "finetune_peak_mb": 70000,
                "infer_peak_mb": 30000,
                "finetune_per_gpu_mb": 70000,
                "infer_per_gpu_mb": 30000,
                "fits": False,
                "budget_gb": 24,
            },
        ]
    )
    write_reports(table, tmp_path, plan=plan)
    for rq in ("rq1", "rq2", "rq3", "rq4"):
        text = (tmp_path / f"{rq}.md").read_text()
        assert (
            "1 cells do not fit in 24 GB per GPU and were left out" in text
            and "big / lora / conala: about 68.4 GB" in text
        )
    rq4 = (tmp_path / "rq4.md").read_text()
    lora = next(line for line in rq4.splitlines() if line.startswith("| llm     | lora       |"))
    assert "|     1500 | 1800           |" in lora  # measured own peak, then the plan's estimate


def test_the_loss_figure_draws_each_fine_tunes_curves(table, tmp_path):
    fine_tunes = []
    for method, scale in (("lora", 1.0), ("full-ft", 0.8)):
        log = tmp_path / f"{method}.csv"
        steps = pd.DataFrame({"step": range(9), "epoch": [i / 8 for i in range(9)]})
        steps["train_loss"] = [None] + [scale * (2 - i / 8) for i in range(1, 9)]
        steps["val_loss"] = [scale * 2.1 if i in (0, 4, 8) else None for i in range(9)]
        steps.to_csv(log, index=False)
        fine_tunes.append({"model": "llm", "variant": method, "dataset": "conala", "log": str(log)})
    write_reports(table, tmp_path / "reports", fine_tunes=fine_tunes)
    image = matplotlib.image.imread(tmp_path / "reports" / "losses.png")
    assert image.shape[0] > 200 and image.shape[1] > 400
    write_reports(table, tmp_path / "none")
    assert matplotlib.image.imread(tmp_path / "none" / "losses.png").shape[0] < 400  # "No fine-tunes"
