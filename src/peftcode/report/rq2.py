"""RQ2: PEFT against in-context learning and retrieval-augmented prompts, per test set on its primary
metric; the figure is one panel per test set, a row per model."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from peftcode.report.claims import Comparison, Untested
from peftcode.report.tables import (
    markdown_table,
    no_cells_figure,
    pass_columns,
    planned_hours,
    results_table,
    with_primary,
)
from peftcode.study.kinds import PEFT_KINDS, PROMPTED_KINDS, RETRIEVING_KINDS

TITLE = "RQ2: PEFT vs in-context learning and retrieval-augmented prompts"


def icl_summary(icl: pd.DataFrame) -> pd.DataFrame:
    """Each ICL setting's score over its seeds: a mean, and a spread only where there are two or more."""
    summary = (
        icl.groupby(["dataset", "metric", "model", "prompt", "shots"])
        .agg(seeds=("seed", "count"), mean=("score", "mean"), std=("score", "std"))
        .reset_index()
    )
    summary["spread"] = [
        f"{std:.3f}" if seeds >= 2 else "one seed"
        for seeds, std in zip(summary["seeds"], summary["std"], strict=True)
    ]
    return summary


def rq2(table: pd.DataFrame, figure_path: Path) -> list:
    prompted = table[table["kind"].isin(PROMPTED_KINDS)]
    if prompted.empty:
        no_cells_figure(figure_path, "No in-context learning or retrieval-augmented cells in this study")
        return [
            "No in-context learning or retrieval-augmented cells in this study.",
            Untested("rq2", "no cells"),
        ]
    table = with_primary(table)
    prompted = table[table["kind"].isin(PROMPTED_KINDS)]
    retrieved = prompted["kind"].isin(RETRIEVING_KINDS)
    icl, rag = prompted[~retrieved], prompted[retrieved]
    peft = table[table["kind"].isin(PEFT_KINDS)]
    summary = icl_summary(icl.astype({"shots": int, "seed": int}))
    body = []
    if not icl.empty:
        body += ["In-context learning with random examples, each test set's primary metric over seeds:", ""]
        body += [markdown_table(summary.drop(columns="std")), ""]
    if not rag.empty:
        body += [
            "Retrieval-augmented prompts (the most similar training examples, by BM25 or by the cosine "
            "similarity of a dense encoder's embeddings):",
            "",
        ]
        columns = ["dataset", "retriever", "shots", "metric", "score", "codebleu", *pass_columns(rag)]
        body += [results_table(rag.astype({"shots": int}), columns, "score"), ""]
    for dataset in sorted(prompted["dataset"].unique()):
        for model in sorted(prompted.loc[prompted["dataset"] == dataset, "model"].unique()):
            tuned = peft[(peft["dataset"] == dataset) & (peft["model"] == model)]
            body += [f"### {dataset}, {model}", ""]
            for name, cells, claim in (("ICL", icl, "rq2"), ("RAG", rag, "rq2_rag")):
                cells = cells[(cells["dataset"] == dataset) & (cells["model"] == model)]
                if cells.empty:
                    continue
                if tuned.empty:
                    body.append(Untested(claim, f"no PEFT cell of {model} on {dataset}"))
                    continue
                winner, best = tuned.loc[tuned["score"].idxmax()], cells.loc[cells["score"].idxmax()]
                metric = winner["metric"]
                title = f"Best PEFT vs best {name} cell"
                body.append(Comparison(title, winner, best, metric, claim, hours=planned_hours(winner, best)))
    prompting_dots(prompted, summary, rag, peft, figure_path)
    return body


def prompting_dots(prompted, summary, rag, peft, figure_path: Path) -> None:
    """One panel per test set on its primary metric, one row per model: ICL by number of shots (mean, and
    the spread over seeds where there are two or more), RAG and the model's best PEFT cell as markers on a
    shared scale, so the legend stays short however many models the study has."""
    datasets = sorted(prompted["dataset"].unique())
    models = sorted(prompted["model"].unique())
    shots = sorted(summary["shots"].unique())
    shades = dict(
        zip(shots, plt.get_cmap("Blues")(np.linspace(0.35, 0.95, max(len(shots), 1))), strict=False)
    )
    figure, axes = plt.subplots(
        1, len(datasets), figsize=(4.6 * len(datasets) + 1.5, max(2.6, 0.38 * len(models) + 1.6)),
        squeeze=False, sharey=True, constrained_layout=True,
    )  # fmt: skip
    offsets = np.linspace(-0.25, 0.25, len(shots) + 2)
    for axis, dataset in zip(axes[0], datasets, strict=True):
        for y, model in enumerate(models):
            for offset, count in zip(offsets, shots, strict=False):
                cell = summary[(summary["dataset"] == dataset) & (summary["model"] == model)]
                cell = cell[cell["shots"] == count]
                if not cell.empty:
                    label = f"ICL, {count} shot{'s' if count != 1 else ''} (mean ± std over seeds)"
                    axis.errorbar(
                        cell["mean"], [y + offset], xerr=cell["std"].fillna(0), fmt="o", color=shades[count],
                        capsize=2, label=label,
                    )  # fmt: skip
            for _, cell in rag[(rag["dataset"] == dataset) & (rag["model"] == model)].iterrows():
                axis.plot(
                    cell["score"], y + offsets[-2], "s", color="tab:orange",
                    label=f"RAG ({cell['retriever']}, {int(cell['shots'])} shots)",
                )  # fmt: skip
            tuned = peft[(peft["dataset"] == dataset) & (peft["model"] == model)]
            if not tuned.empty:
                axis.plot(
                    tuned["score"].max(),
                    y + offsets[-1],
                    "*",
                    color="black",
                    markersize=10,
                    label="best PEFT",
                )
        axis.set_yticks(range(len(models)), models, fontsize=9)
        axis.set_ylim(len(models) - 0.5, -0.5)
        axis.set_xlim(-0.02, 1.02)
        metric = prompted.loc[prompted["dataset"] == dataset, "metric"].iloc[0]
        axis.set_xlabel(f"{metric} (share of test set)")
        axis.set_title(dataset)
        axis.grid(axis="x", alpha=0.3)
    handles = {}
    for axis in axes[0]:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    figure.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=3, fontsize=9)
    figure.suptitle("RQ2: in-context learning and RAG against the best PEFT method per model")
    figure.savefig(figure_path, bbox_inches="tight")
    plt.close(figure)
