"""The study's datasets in their real formats, from fixture files of a few rows each (tests/fixtures/):
the field mappings the paper grid uses, malformed rows dropped and counted, a missing column named."""

import pandas as pd
import pytest

from peftcode.data.prepare_data import DataError, prepare_data
from peftcode.data.presets import is_python_example
from peftcode.evaluation.evaluate import execution_metrics
from peftcode.sandbox.verdicts import Submission, run_submissions
from peftcode.study.settings import DataSettings, EvalSettings
from tests.helpers import REPO

FIXTURES = REPO / "tests" / "fixtures"


def prepare(tmp_path, stem: str, file_format: str, fields: dict, **extra) -> tuple[pd.DataFrame, dict]:
    """Prepare a fixture file as every split of a dataset; returns its test split and stats."""
    settings = {
        "source": {"path": str(FIXTURES)},
        "format": file_format,
        "splits": dict.fromkeys(("train", "validation", "test"), stem),
        "fields": fields,
        **extra,
    }
    stats = prepare_data(DataSettings(**settings), tmp_path)
    return pd.read_parquet(tmp_path / "test.parquet"), stats["splits"]["test"]


def test_conala_corpus_prefers_the_rewritten_intent(tmp_path):
    rows, stats = prepare(
        tmp_path, "conala-corpus", "json", {"intent": ["rewritten_intent", "intent"], "code": "snippet"}
    )
    assert list(rows["intent"]) == [
        "sort list `l` in reverse order",
        "Get the length of a string",  # no rewritten intent: the original one
        "check if key 'a' is in dictionary `d`",
    ]
    assert list(rows["code"]) == ["l.sort(reverse=True)", "len(s)", "'a' in d"]
    assert stats["dropped_rows"] == 1  # no snippet


def test_codealpaca_keeps_python_examples_only(tmp_path):
    fields = {"intent": "instruction", "input": "input", "code": "output"}
    rows, stats = prepare(tmp_path, "codealpaca-20k", "json", fields, python_only=True)
    assert list(rows["code"]) == ["def square(x):\n    return x * x", "items.reverse()"]
    assert rows["intent"][1] == "Reverse the given list.\nitems = [1, 2, 3]"
    # Java, prose and SQL filtered; the row without an output dropped as malformed.
    assert (stats["filtered_rows"], stats["dropped_rows"]) == (3, 1)


@pytest.mark.parametrize(
    ("intent", "code", "python"),
    [
        ("Sort the list.", "sorted(items)", True),
        ("Write a function.", "def f():\n    return 1", True),
        ("Write a JavaScript function to add.", "function add(a, b) { return a + b; }", False),
        ("Write a C program that prints hello.", "print('hello')", False),
        ("What is recursion?", "Recursion is when a function calls itself", False),
        ("Write a bash one-liner.", "x = 1", False),
        ("Is Python typed?", "Yes", False),
    ],
)
def test_python_only_filter(intent, code, python):
    assert is_python_example(intent, code) is python


# MBPP's own mapping: its setup code (where a task has one) runs before the asserts, as its harness runs it.
MBPP = {
    "intent": "text",
    "input": "test_list",
    "code": "code",
    "tests": ["{test_setup_code}\n{test_list}", "test_list"],
}


def test_mbpp_tests_are_the_asserts_after_the_setup_code(tmp_path):
    rows, stats = prepare(tmp_path, "mbpp", "jsonl", MBPP)
    assert len(rows) == 3 and stats["dropped_rows"] == 1  # no tests
    assert rows["tests"][1] == "assert similar_elements((3, 4, 5, 6), (5, 7, 4, 10)) == (4, 5)"
    assert rows["tests"][2].startswith("import math\nRADIUS = 2\nassert math.isclose(circle_area(RADIUS)")
    programs = [Submission(c, t) for c, t in zip(rows["code"], rows["tests"], strict=True)]
    assert [o.reason for o in run_submissions(programs) if not o.passed] == []
    # Without its setup code, the task's reference fails.
    assert not run_submissions([Submission(rows["code"][2], rows["tests"][2].split("\n", 2)[2])])[0].passed


HUMANEVAL = {
    "intent": "prompt",
    "code": "{prompt}{canonical_solution}",
    "tests": "{prompt}\n{test}\ncheck({entry_point})",
}


def test_humaneval_fields_are_templates_over_its_columns(tmp_path):
    rows, stats = prepare(tmp_path, "humaneval", "jsonl", HUMANEVAL)
    assert len(rows) == 2 and stats["dropped_rows"] == 1  # an empty canonical solution
    assert rows["code"][0].startswith("def add(a: int, b: int) -> int:") and "return a + b" in rows["code"][0]
    assert rows["tests"][1].endswith("check(is_palindrome)")
    programs = [Submission(c, t) for c, t in zip(rows["code"], rows["tests"], strict=True)]
    assert all(outcome.passed for outcome in run_submissions(programs))
    # A wrong solution fails the same tests.
    wrong = Submission(rows["code"][0].replace("a + b", "a - b"), rows["tests"][0])
    assert not run_submissions([wrong])[0].passed


def test_a_missing_column_is_named_with_the_file(tmp_path):
    fields = {**HUMANEVAL, "tests": "{test}\ncheck({entry})"}
    with pytest.raises(DataError, match=r"humaneval\.jsonl: missing column .*check\(\{entry\}\).* 'tests'"):
        prepare(tmp_path, "humaneval", "jsonl", fields)


APPS = {
    "intent": "question",
    "input": "starter_code",
    "code": "solution",
    "tests": "test_cases",
    "difficulty": "difficulty",
}


def test_apps_solutions_and_input_output_tests_run_per_difficulty(tmp_path):
    rows, stats = prepare(tmp_path, "apps", "jsonl", APPS, preset="apps")
    assert list(rows["difficulty"]) == ["introductory", "interview", "competition"]
    assert stats["dropped_rows"] == 1  # solutions that are not JSON
    assert rows["intent"][1].endswith("class Solution:\n    def maxProfit(self, prices):")
    references = [Submission(c, t) for c, t in zip(rows["code"], rows["tests"], strict=True)]
    assert [o.reason for o in run_submissions(references) if not o.passed] == []
    # Standard input/output and call-based problems both tell a wrong solution apart.
    wrong = [rows["code"][0].replace("a + b", "a - b"), rows["code"][1].replace("price - low", "low")]
    outcomes = run_submissions([Submission(w, t) for w, t in zip(wrong, rows["tests"], strict=False)])
    assert not any(o.passed for o in outcomes)
    generations = pd.DataFrame(
        {
            "samples": [[c, "print("] for c in rows["code"]],
            "tests": rows["tests"],
            "difficulty": rows["difficulty"],
        }
    )
    settings = {
        "k": [1],
        "codebleu_bootstrap_samples": 100,
        "pass_k": [1, 2],
        "bootstrap_samples": 100,
        "execution": {"timeout_s": 5, "memory_mb": 512, "unsafe_without_isolation": False},
    }
    metrics = execution_metrics(generations, EvalSettings(**settings), workers=2)
    assert metrics["passes"] == [1, 1, 1] and metrics["pass@1"] == 0.5 and metrics["pass@2"] == 1.0
    assert metrics["pass@1 (interview)"] == 0.5 and metrics["pass@2 (competition)"] == 1.0


def test_apps_without_its_json_columns_names_the_missing_one(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "apps.jsonl").write_text('{"question": "q", "solutions": "[]", "difficulty": "x"}\n')
    settings = {
        "source": {"path": str(tmp_path / "src")},
        "format": "jsonl",
        "splits": dict.fromkeys(("train", "validation", "test"), "apps"),
        "fields": APPS,
        "preset": "apps",
    }
    with pytest.raises(DataError, match=r"apps\.jsonl: missing column 'input_output' of the 'apps' preset"):
        prepare_data(DataSettings(**settings), tmp_path / "out")
