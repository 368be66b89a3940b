"""Metrics of a cell's generations: EM@k over the ranked candidates and CodeBLEU on the top-1 candidate."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from codebleu import calc_codebleu


def normalise(code: str) -> str:
    """Code with every run of whitespace collapsed to one space, for exact-match comparison."""
    return " ".join(code.split())


def exact_match_at_k(
    references: Sequence[str], candidates: Sequence[Sequence[str]], ks: Sequence[int]
) -> dict[str, float]:
    """Share of examples whose normalised reference is among their first k normalised candidates."""
    ranks = []
    for reference, ranked in zip(references, candidates, strict=True):
        target = normalise(reference)
        ranks.append(next((i for i, c in enumerate(ranked) if normalise(c) == target), None))
    return {f"em@{k}": sum(r is not None and r < k for r in ranks) / len(ranks) for k in ks}


def codebleu(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Corpus CodeBLEU and its four components, as the ``codebleu`` package computes them for Python."""
    scores = calc_codebleu(list(references), list(predictions), lang="python")
    return {
        "codebleu": scores["codebleu"],
        "codebleu_ngram": scores["ngram_match_score"],
        "codebleu_weighted_ngram": scores["weighted_ngram_match_score"],
        "codebleu_syntax": scores["syntax_match_score"],
        "codebleu_dataflow": scores["dataflow_match_score"],
    }


def evaluate(
    generations_path: str | Path,
    out_path: str | Path,
    cell: dict,
    settings: dict,
    infer_memory_path: str | Path,
    finetune_memory_path: str | Path | None = None,
) -> dict:
    """Score one cell and write its row of the results table: cell, metrics, and the jobs' costs."""
    generations = pd.read_parquet(generations_path)
    candidates = [list(c) for c in generations["candidates"]]
    top1 = [c[0] if c else "" for c in candidates]
    row = {
        **cell,
        "n_test": len(generations),
        **exact_match_at_k(generations["reference"], candidates, settings["k"]),
        **codebleu(generations["reference"], top1),
    }
    inference = json.loads(Path(infer_memory_path).read_text())
    row.update(
        infer_peak_rss_mb=inference["peak_rss_mb"],
        infer_time_s=inference["wall_time_s"],
        total_params=inference["total_params"],
        device=inference["device"],
    )
    if finetune_memory_path is not None:
        training = json.loads(Path(finetune_memory_path).read_text())
        row.update(
            trainable_params=training["trainable_params"],
            finetune_peak_rss_mb=training["peak_rss_mb"],
            finetune_time_s=training["wall_time_s"],
            train_tokens_per_s=training["tokens_per_s"],
            best_val_loss=training["best_val_loss"],
        )
    else:
        row["trainable_params"] = 0
    Path(out_path).write_text(json.dumps(row, indent=2))
    return row
