"""Metrics of a cell's generations: EM@k over the ranked candidates, CodeBLEU on the top-1 candidate and
pass@k of sampled programs run in the sandbox, each with a 95% bootstrap confidence interval over the test
examples (the scores themselves are :mod:`peftcode.evaluation.scores`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from peftcode.evaluation.codebleu_sums import CodebleuSums
from peftcode.evaluation.scores import exact_match_at_k, match_ranks, pass_at_k
from peftcode.evaluation.stats import bootstrap_corpus_ci, bootstrap_mean_ci
from peftcode.sandbox.runner import PACKAGES, Limits, require_isolation
from peftcode.sandbox.tests_column import task_names
from peftcode.sandbox.verdicts import Submission, run_submissions
from peftcode.study.settings import EvalSettings

SANDBOX_KERNEL = "kernel isolation"
SANDBOX_UNSAFE = "UNSAFE: without kernel isolation"


def execution_metrics(generations: pd.DataFrame, settings: EvalSettings, workers: int) -> dict:
    """pass@k over each problem's samples, each run in the sandbox against the problem's tests, which run
    in the judge (:mod:`peftcode.sandbox.verdicts`), with 95% bootstrap intervals over problems; ``passes``
    keeps each problem's count of passing samples."""
    samples = [list(s) for s in generations["samples"]]
    tests = generations["tests"]
    # The names each task asks for, from its reference: the program's wherever the tests use them.
    references = generations["reference"] if "reference" in generations.columns else [""] * len(tests)
    asked = [tuple(task_names(r, t)) for r, t in zip(references, tests, strict=True)]
    programs = [
        Submission(sample, test, names)
        for row, test, names in zip(samples, tests, asked, strict=True)
        for sample in row
    ]
    execution = settings.execution
    isolated = not execution["unsafe_without_isolation"]
    packages = tuple(execution.get("packages", PACKAGES))
    if isolated:
        require_isolation()
    limits = Limits(timeout_s=execution["timeout_s"], memory_mb=execution["memory_mb"])
    outcomes = iter(run_submissions(programs, workers, limits, isolated, packages))
    passes = [sum(next(outcomes).passed for _ in row) for row in samples]
    drawn = min(len(row) for row in samples)
    metrics = {
        "pass_samples": drawn,
        "passes": passes,
        "sandbox": SANDBOX_KERNEL if isolated else SANDBOX_UNSAFE,
    }
    levels = list(generations["difficulty"]) if "difficulty" in generations.columns else [""] * len(samples)
    for k in (k for k in settings.pass_k if k <= drawn):
        per_problem = [pass_at_k(len(row), correct, k) for row, correct in zip(samples, passes, strict=True)]
        low, high = bootstrap_mean_ci(per_problem, settings.bootstrap_samples)
        metrics.update(
            {f"pass@{k}": float(np.mean(per_problem)), f"pass@{k}_ci_low": low, f"pass@{k}_ci_high": high}
        )
        # APPS reports pass@k per difficulty level as well.
        for level in sorted(set(levels) - {""}):
            at_level = [value for value, d in zip(per_problem, levels, strict=True) if d == level]
            metrics[f"pass@{k} ({level})"] = float(np.mean(at_level))
    return metrics


def written_parts(texts: Sequence[str], prefixes: Sequence[str]) -> list[str]:
    """Each text without the prefix it begins with (a completion-style dataset's given start of the code),
    so that CodeBLEU scores what the model wrote against the same part of the reference."""
    return [t[len(p) :] if p and t.startswith(p) else t for t, p in zip(texts, prefixes, strict=True)]


# The columns of a cell's row taken from its jobs' cost records: ours -> the record's.
INFER_RECORD = {
    "infer_peak_rss_mb": "peak_rss_mb",
    "infer_time_s": "wall_time_s",
    "infer_tokens_per_s": "tokens_per_s",
    "total_params": "total_params",
    "device": "device",
    "precision": "precision",
    "engine": "engine",
    "model_commit": "model_commit",
}
FINETUNE_RECORD = {
    "trainable_params": "trainable_params",
    "quantization_bits": "quantization_bits",
    "gradient_checkpointing": "gradient_checkpointing",
    "finetune_weight_mb": "weight_footprint_mb",
    "finetune_peak_rss_mb": "peak_rss_mb",
    "finetune_time_s": "total_wall_time_s",
    "finetune_attempts": "attempts",
    "finetune_precision": "precision",
    "optimizer": "optimizer",
    "train_tokens_per_s": "tokens_per_s",
    "best_val_loss": "best_val_loss",
}


def evaluate(
    generations_path: str | Path,
    out_path: str | Path,
    cell: dict,
    settings: EvalSettings,
    infer_cost_path: str | Path,
    finetune_cost_path: str | Path | None = None,
    workers: int = 1,
    test_path: str | Path | None = None,
) -> dict:
    """Score one cell and write its row of the results table: cell, metrics, and the jobs' costs. With the
    test split (``test_path``), CodeBLEU leaves out each example's prefix."""
    generations = pd.read_parquet(generations_path)
    references = list(generations["reference"])
    candidates = [list(c) for c in generations["candidates"]]
    top1 = [c[0] if c else "" for c in candidates]
    if test_path is not None:
        prefixes = pd.read_parquet(test_path, columns=["id", "prefix"]).set_index("id")["prefix"]
        given = list(prefixes.reindex(generations["id"]).fillna(""))
        references, top1 = written_parts(references, given), written_parts(top1, given)
    ranks = match_ranks(list(generations["reference"]), candidates)
    # Per-example outputs (ranks, passes) line up with the examples' own identifiers, to look them up.
    ids = [source or ours for source, ours in zip(generations["source_id"], generations["id"], strict=True)]
    row = {**cell, "n_test": len(generations), "example_ids": ids, "ranks": ranks}
    row.update(exact_match_at_k(ranks, settings.k, settings.bootstrap_samples))
    sums = CodebleuSums(references, top1)
    row.update(sums.score())
    row["codebleu_ci_low"], row["codebleu_ci_high"] = bootstrap_corpus_ci(
        len(references), lambda rows: sums.score(rows)["codebleu"], settings.codebleu_bootstrap_samples
    )
    if "samples" in generations.columns:
        row.update(execution_metrics(generations, settings, workers))
    inference = json.loads(Path(infer_cost_path).read_text())
    row.update({ours: inference[theirs] for ours, theirs in INFER_RECORD.items()})
    if finetune_cost_path is not None:
        training = json.loads(Path(finetune_cost_path).read_text())
        row.update({ours: training[theirs] for ours, theirs in FINETUNE_RECORD.items()})
        # What the study's Figure 1 plots: accelerator memory where there is one, else the process's.
        row["finetune_peak_mb"] = training.get("cuda_max_allocated_mb", training["peak_rss_mb"])
        # The job's own part, which the memory plan estimates.
        row["finetune_own_peak_mb"] = training.get(
            "cuda_max_reserved_mb", training["peak_rss_mb"] - training["baseline_rss_mb"]
        )
    else:
        row["trainable_params"] = 0
    Path(out_path).write_text(json.dumps(row, indent=2))
    return row
