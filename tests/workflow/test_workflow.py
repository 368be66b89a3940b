"""The whole DAG on the tiny study: every target file, its contents, and what an edit invalidates."""

import copy
import json
import shutil
import struct

import pandas as pd
import pytest

from peftcode.report.report import QUESTIONS
from tests.browser import chromium, labels, landing, opened_report, render
from tests.helpers import REPO, read_yaml
from tests.study_runs import planned_jobs, snakemake, write_study

# The whole tiny study, then its reruns and reports; beside the SLURM test at the start (see conftest.py).
pytestmark = pytest.mark.slow(minutes=4, start=True)

PEFT_METHODS = ("lora", "ia3", "prompt-tuning", "prefix-tuning", "qlora-4bit")
TRAINED = ("full-ft", *PEFT_METHODS)
PROMPTED = ("icl-0shot", "icl-1shot-seed42", "icl-1shot-seed777", "rag-1shot")


def tiny_study(results) -> dict:
    config = read_yaml(REPO / "tests" / "tiny.yaml")
    config["results"] = str(results)
    config["study"] = [
        {"models": ["tiny-llama"], "methods": list(config["methods"]), "datasets": ["conala-style"]},
        {"models": ["tiny-llama"], "methods": ["lora"], "datasets": ["codealpaca-style"]},
        {"models": ["tiny-llama"], "methods": ["lora"], "datasets": ["joint"]},
        {"models": ["tiny-llama"], "methods": ["lora"], "datasets": ["mbpp-style"], "test_on": ["humaneval"]},
        {"models": ["tiny-llama"], "methods": ["zero-shot"], "datasets": ["humaneval"]},
    ]
    config["methods"]["zero-shot"] = {"kind": "icl", "shots": [0]}
    return config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    config = tiny_study(folder / "results")
    # Model jobs ask for a GPU each, of two that CUDA_VISIBLE_DEVICES names (a CPU build of torch ignores it).
    config["resources"] = {"gpu": 1}
    configfile = write_study(config, folder)
    result = snakemake(
        configfile,
        *("--cores", "2", "--resources", "gpu=2"),
        env={"CUDA_VISIBLE_DEVICES": "0,1"},
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return folder / "results", config, configfile


def cells():
    yield from (("conala-style", method) for method in (*TRAINED, *PROMPTED))
    yield ("codealpaca-style", "lora")
    yield from ((dataset, "lora-joint") for dataset in ("conala-style", "codealpaca-style"))
    yield ("mbpp-style", "lora")
    yield from (("humaneval", method) for method in ("lora-mbpp-style", "zero-shot-0shot"))


def test_prepare_targets(tiny_run):
    results, config, _ = tiny_run
    for dataset in ("conala-style", "codealpaca-style"):
        limits = config["datasets"][dataset]["limit"]
        stats = json.loads((results / "data" / dataset / "stats.json").read_text())
        for split in ("train", "validation", "test"):
            frame = pd.read_parquet(results / "data" / dataset / f"{split}.parquet")
            assert len(frame) == limits[split] == stats["splits"][split]["rows"]
            assert frame["intent"].str.len().min() > 0 and frame["code"].str.len().min() > 0
    joint = json.loads((results / "data" / "joint" / "stats.json").read_text())
    assert joint["splits"]["train"] == {"rows": 32, "conala-style": 16, "codealpaca-style": 16}
    ids = pd.read_parquet(results / "data" / "joint" / "train.parquet")["id"]
    assert ids.is_unique and ids.str.startswith(("conala-style/", "codealpaca-style/")).all()
    model = results / "models" / "tiny-llama"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in model.iterdir()}
    info = json.loads((model / "peftcode_model.json").read_text())
    assert info["pretrained"] is False and info["model_type"] == "llama"


@pytest.mark.parametrize("method", TRAINED)
def test_finetune_targets(tiny_run, method):
    results, config, _ = tiny_run
    folder = results / "finetune" / "tiny-llama" / method / "conala-style"
    files = {p.name for p in (folder / "checkpoint").iterdir()}
    if method == "full-ft":
        assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    else:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    log = pd.read_csv(folder / "train_log.csv")
    steps = 16 // config["training"]["batch_size"]
    assert list(log["step"]) == list(range(steps + 1))
    assert log["val_loss"].notna().sum() == 1 + config["training"]["evals_per_epoch"]
    assert log["train_loss"].iloc[1:].notna().all() and log["tokens"].is_monotonic_increasing
    memory = json.loads((folder / "cost.json").read_text())
    assert memory["steps"] == steps and memory["device"] == "cpu"
    assert memory["peak_rss_mb"] >= memory["weight_footprint_mb"] > 0
    assert memory["best_val_loss"] == pytest.approx(log["val_loss"].min())
    assert 0 < memory["trainable_params"] <= memory["total_params"]
    if method != "full-ft":
        assert memory["trainable_params"] < memory["total_params"] / 10
    assert memory["quantization_bits"] == (4 if method == "qlora-4bit" else None)


def test_finished_fine_tunes_leave_no_resume_state(tiny_run):
    results, _, _ = tiny_run
    assert not any((results / "resume").rglob("*.pt"))


def test_the_joint_adapter_is_trained_once_on_the_union(tiny_run):
    results, config, _ = tiny_run
    memory = json.loads(
        (results / "finetune" / "tiny-llama" / "lora-joint" / "joint" / "cost.json").read_text()
    )
    assert memory["steps"] == 32 // config["training"]["batch_size"]
    assert len(list((results / "finetune" / "tiny-llama" / "lora-joint").iterdir())) == 1


@pytest.mark.parametrize(("dataset", "method"), list(cells()))
def test_generation_and_metrics_targets(tiny_run, dataset, method):
    results, config, _ = tiny_run
    generations = pd.read_parquet(results / "generations" / "tiny-llama" / method / f"{dataset}.parquet")
    test = pd.read_parquet(results / "data" / dataset / "test.parquet")
    assert list(generations["id"]) == list(test["id"])
    assert list(generations["reference"]) == list(test["code"])
    returned = {**config["generation"], **config["datasets"][dataset].get("generation", {})}[
        "num_return_sequences"
    ]
    assert all(len(c) == returned for c in generations["candidates"])
    if dataset == "conala-style":
        assert not any("\n" in c for cands in generations["candidates"] for c in cands)
    shots = int(method.split("-")[1][0]) if method.startswith(("icl", "rag")) else 0
    assert all(p.count("### Instruction:") == shots + 1 for p in generations["prompt"])
    metrics = json.loads((results / "metrics" / "tiny-llama" / method / f"{dataset}.json").read_text())
    ems = [metrics[f"em@{k}"] for k in config["evaluation"]["k"]]
    assert ems == sorted(ems) and all(0 <= e <= 1 for e in ems)
    assert 0 <= metrics["codebleu"] <= 1
    for name in [f"em@{k}" for k in config["evaluation"]["k"]] + ["codebleu"]:
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"]
    assert len(metrics["ranks"]) == len(test)
    assert (metrics["model"], metrics["variant"], metrics["dataset"], metrics["n_test"]) == (
        "tiny-llama",
        method,
        dataset,
        len(test),
    )
    assert (metrics["trainable_params"] > 0) == (metrics["kind"] not in ("icl", "rag"))
    # Each per-example output lines up with the examples' own identifiers where the source has them.
    assert metrics["example_ids"] == [s or i for s, i in zip(test["source_id"], test["id"], strict=True)]
    assert list(generations["source_id"]) == list(test["source_id"])
    if dataset == "mbpp-style":  # samples run in the sandbox
        assert all(len(s) == 2 for s in generations["samples"]) and metrics["pass_samples"] == 2
        assert len(metrics["passes"]) == len(test) and 0 <= metrics["pass@1"] <= metrics["pass@2"] <= 1
    elif dataset == "humaneval":  # greedy: the one draw is the greedy candidate
        assert test["source_id"].str.startswith("HumanEval/").all()
        assert [list(s) for s in generations["samples"]] == [list(c) for c in generations["candidates"]]
        assert metrics["pass_samples"] == 1 and 0 <= metrics["pass@1"] <= 1
    else:
        assert "samples" not in generations.columns and "pass@1" not in metrics


def test_results_table_and_reports(tiny_run):
    results, _, _ = tiny_run
    table = pd.read_parquet(results / "results.parquet")
    assert len(table) == len(list(cells()))
    assert set(zip(table["dataset"], table["variant"], strict=True)) == set(cells())
    assert len(pd.read_csv(results / "results.csv")) == len(table)
    icl = table[table["kind"] == "icl"]
    assert sorted(icl["shots"]) == [0, 0, 1, 1]
    for rq in ("rq1", "rq2", "rq3", "rq4"):
        text = (results / "reports" / f"{rq}.md").read_text()
        assert text.startswith(f"# {rq.upper()}:") and f"({rq}.png)" in text
        page = (results / "reports" / f"{rq}.html").read_text()
        assert "<table>" in page and "src='data:image/png;base64," in page
    for figure in ("rq1.png", "rq2.png", "rq3.png", "rq4.png", "figure1_memory.png", "losses.png"):
        image = (results / "reports" / figure).read_bytes()
        assert image.startswith(b"\x89PNG") and len(image) > 5000, figure
    rq1 = (results / "reports" / "rq1.md").read_text()
    assert "pass@1" in rq1.split("## mbpp-style")[1]
    assert "tiny-llama (untrained)" in rq1 and "prefix-tuning" in rq1
    assert "Trained on mbpp-style, tested on humaneval:" in rq1.split("## humaneval")[1]
    rq3 = (results / "reports" / "rq3.md").read_text()
    rows = [line for line in rq3.splitlines() if line.startswith("| tiny-llama")]
    assert sorted(line.split("|")[4].strip() for line in rows) == ["joint"] * 2 + ["per-dataset"] * 2


def png_size(path) -> list[int]:
    return list(struct.unpack(">II", path.read_bytes()[16:24]))


@pytest.mark.skipif(chromium() is None, reason="no Chromium (.ci/run installs Debian's chromium)")
def test_the_html_report_shows_every_question_and_figure_in_a_browser(tiny_run, tmp_path):
    results, _, configfile = tiny_run
    report = tmp_path / "report.html"
    made = snakemake(configfile, "--report", str(report))
    assert made.returncode == 0, made.stderr[-3000:]
    with opened_report(report) as page:
        shown = landing(page)
        assert "reruns the study of Weyssow et al." in shown and "How to read a claim." in shown, shown[:2000]
        assert "This run's grid: " in shown and "{{" not in shown
        assert labels(page, "Research questions") == ["RQ1", "RQ2", "RQ3", "RQ4"]
        for name, (title, _) in QUESTIONS.items():
            shown = render(page, "Research questions", name.upper())
            assert shown.heading == title and shown.tables >= 1, shown
            assert shown.images == [png_size(results / "reports" / f"{name}.png")], shown
        figures = {
            "Figure 1: peak fine-tuning memory": "figure1_memory",
            **{q.upper(): q for q in QUESTIONS},
            "Training and validation loss": "losses",
        }
        assert labels(page, "Figures") == list(figures)
        for label, name in figures.items():
            shown = render(page, "Figures", label)
            assert shown.images == [png_size(results / "reports" / f"{name}.png")], shown
        assert page.errors == []


def test_concurrent_model_jobs_each_computed_on_their_own_gpu(tiny_run):
    results, _, _ = tiny_run
    records = [json.loads(path.read_text()) for path in results.rglob("*cost.json")]
    assert len(records) >= 10 and all(r["cuda_visible_devices"] in ("0", "1") for r in records)
    overlapping = [
        (a, b)
        for i, a in enumerate(records)
        for b in records[i + 1 :]
        if a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]
    ]
    assert overlapping, "the run never had two model jobs at once"
    assert all(a["cuda_visible_devices"] != b["cuda_visible_devices"] for a, b in overlapping)


def test_a_finished_study_has_nothing_left_to_do_with_tracking_on_or_off(tiny_run, tmp_path):
    results, config, configfile = tiny_run
    assert planned_jobs(configfile) == {}
    # What its model jobs kept for a retry went with the run's success (the Snakefile's onsuccess).
    assert (results / "resume").is_dir() and not [p for p in (results / "resume").rglob("*") if p.is_file()]
    tracked = {**config, "tracking": {"backend": "mlflow"}}
    assert planned_jobs(write_study(tracked, tmp_path)) == {}


def test_editing_one_method_reruns_only_its_cells(tiny_run, tmp_path):
    _, config, _ = tiny_run
    edited = copy.deepcopy(config)
    edited["methods"]["lora"]["lr"] = 5e-3
    counts = planned_jobs(write_study(edited, tmp_path))
    # LoRA on each of the three datasets, the joint adapter tested on two, and the MBPP-trained one on
    # HumanEval too
    assert counts == {"finetune": 4, "infer": 6, "evaluate": 6, "aggregate": 1, "report": 1, "all": 1}


def test_editing_one_dataset_reruns_only_its_chain(tiny_run, tmp_path):
    _, config, _ = tiny_run
    edited = copy.deepcopy(config)
    edited["datasets"]["codealpaca-style"]["max_target_length"] = 16
    counts = planned_jobs(write_study(edited, tmp_path))
    # Its own LoRA cell, and the joint adapter trained on it, tested on both datasets; and the plan, whose
    # estimates follow the lengths
    assert counts == {
        "plan": 1,
        "prepare_data": 1,
        "join_data": 1,
        "finetune": 2,
        "infer": 3,
        "evaluate": 3,
        "aggregate": 1,
        "report": 1,
        "all": 1,
    }


DOWNSTREAM = {"aggregate": 1, "report": 1, "all": 1}


def checkout_with(tmp_path, module: str, edit, dated: bool = True):
    """A copy of this checkout (its Snakefile, workflow and src) that runs the finished tiny study, with a
    file edited (``edit`` of its text; ``module`` is a module of peftcode, ``training.finetune``, or a path in
    the checkout);
    the study's record of what made each file comes along. Without ``dated``, every file is new (a fresh
    clone, or every file touched)."""
    copy = tmp_path / "checkout"
    copy.mkdir(parents=True)
    copied = shutil.copy2 if dated else shutil.copy
    for part in ("Snakefile", "config.yaml", "workflow", "src", "envs", "data", "profiles"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, copy / part, copy_function=copied)
        else:
            copied(source, copy / part)
    shutil.copytree(REPO / ".snakemake" / "metadata", copy / ".snakemake" / "metadata")
    path = (
        copy / module
        if (copy / module).is_file()
        else copy / "src" / "peftcode" / f"{module.replace('.', '/')}.py"
    )
    path.write_text(edit(path.read_text()))
    return copy


def appended(text: str):
    return lambda source: source + text


def docstring_edited(source: str) -> str:
    return source.replace('"""', '"""Edited: ', 1)


@pytest.mark.parametrize(
    ("module", "edit", "expected"),
    [
        # A comment, a docstring: nothing to rerun.
        ("training.finetune", appended("\n# a comment\n"), {}),
        ("sandbox.runner", docstring_edited, {}),
        # The sandbox harness: every evaluation, and what follows them.
        ("sandbox.runner", appended("\nEDITED = True\n"), {"evaluate": 16, **DOWNSTREAM}),
        # The training loop: the 9 fine-tunes and their 11 cells' inference, no ICL, RAG or zero-shot.
        (
            "training.finetune",
            appended("\nEDITED = True\n"),
            {"finetune": 9, "infer": 11, "evaluate": 11, **DOWNSTREAM},
        ),
    ],
    ids=["comment", "docstring", "sandbox", "training loop"],
)
def test_an_edit_reruns_what_it_changes_and_nothing_else(tiny_run, tmp_path, module, edit, expected):
    _, _, configfile = tiny_run
    checkout = checkout_with(tmp_path, module, edit)
    assert planned_jobs(configfile, cwd=checkout) == expected


def test_a_files_date_reruns_nothing_and_a_scripts_content_reruns_its_jobs(tiny_run, tmp_path):
    """Reruns follow what the code does, never a file's date: a fresh clone beside the finished study (every
    file of workflow/, src/ and data/ newer than the results) plans nothing; a changed line in a job's
    script reruns that rule's jobs."""
    _, _, configfile = tiny_run
    clone = checkout_with(tmp_path / "clone", "config.yaml", lambda text: text, dated=False)
    assert planned_jobs(configfile, cwd=clone) == {}
    edited = checkout_with(tmp_path / "edited", "workflow/scripts/evaluate.py", appended("\nEDITED = True\n"))
    assert planned_jobs(configfile, cwd=edited) == {"evaluate": 16, **DOWNSTREAM}


def test_partial_report_lists_what_has_not_run(tmp_path):
    config = tiny_study(tmp_path / "results")
    config["study"].append({"models": ["tiny-llama"], "methods": ["ia3"], "datasets": ["codealpaca-style"]})
    result = snakemake(write_study(config, tmp_path), "--cores", "1", "partial_report")
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "results" / "reports" / "partial" / "rq1.md").read_text()
    expected = len(list(cells())) + 1
    assert f"{expected} of {expected} cells have not finished" in text
    assert "- tiny-llama / ia3 / codealpaca-style" in text


def test_the_plan_lists_every_cell_and_rq4_sets_estimates_beside_measurements(tiny_run):
    results, _, _ = tiny_run
    plan = pd.read_csv(results / "plan.csv")
    planned = set(zip(plan["dataset"], plan["variant"], strict=True))
    assert planned == set(cells()) and plan["fits"].all()
    trained = plan[plan["variant"].isin([*TRAINED, "lora-joint"])]
    assert trained["finetune_peak_mb"].notna().all() and (plan["gpu_hours"] > 0).all()
    rq4 = (results / "reports" / "rq4.md").read_text()
    assert "estimated_mb" in rq4 and "optimizer" in rq4 and "adamw" in rq4


def test_a_failing_job_leaves_its_traceback_in_its_log(tmp_path):
    source = tmp_path / "broken"
    source.mkdir()
    for split in ("train", "validation", "test"):
        (source / f"{split}.json").write_text('[{"nl": "a", "cmd": "b"},\n {"nl": "c" "cmd": "d"}]')
    config = read_yaml(REPO / "tests" / "tiny.yaml")
    config["results"] = str(tmp_path / "results")
    config["datasets"]["broken"] = {
        "source": {"path": str(source)},
        "format": "json",
        "fields": {"intent": "nl", "code": "cmd"},
    }
    config["study"] = [{"models": ["tiny-llama"], "methods": ["icl"], "datasets": ["broken"]}]
    result = snakemake(
        write_study(config, tmp_path),
        "--cores",
        "1",
        str(tmp_path / "results" / "data" / "broken" / "stats.json"),
    )
    assert result.returncode != 0
    log = tmp_path / "results" / "logs" / "prepare_data" / "broken.log"
    assert str(log) in result.stderr  # Snakemake names the log of the job that failed
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "DataError" in text and "train.json:2:13" in text
