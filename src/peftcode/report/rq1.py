"""RQ1: PEFT-tuned LLMs against fully fine-tuned models, per test set on its primary metric; the figure is
one heat map per test set, models by method."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from peftcode.report.claims import Comparison, Untested
from peftcode.report.tables import em_columns, fine_tuned, pass_columns, planned_hours, results_table
from peftcode.study.kinds import FULL_WEIGHT_KINDS, PEFT_KINDS

TITLE = "RQ1: PEFT-tuned LLMs vs fully fine-tuned models"


def rq1(table: pd.DataFrame, figure_path: Path) -> list:
    trained = fine_tuned(table, figure_path)
    if trained.empty:
        return ["No fine-tuned cells in this study.", Untested("rq1", "no fine-tuned cells")]
    body = []
    for dataset, rows in trained.groupby("dataset"):
        metric = rows["metric"].iloc[0]
        columns = [*em_columns(rows), "codebleu", *pass_columns(rows), "trainable_params"]
        body += [f"## {dataset}", "", f"Judged by {metric}.", ""]
        # Cells trained on another dataset and tested on this one, apart from those trained on it.
        for trained_on, group in rows[rows["transfer"]].groupby("train_dataset"):
            body += [
                f"Trained on {trained_on}, tested on {dataset}:",
                "",
                results_table(group, columns, metric),
                "",
            ]
        rows = rows[~rows["transfer"]]
        if rows.empty:
            continue
        body += [results_table(rows, columns, metric), ""]
        full, peft = rows[rows["kind"].isin(FULL_WEIGHT_KINDS)], rows[rows["kind"].isin(PEFT_KINDS)]
        if full.empty or peft.empty:
            body.append(Untested("rq1", f"no {'full fine-tune' if full.empty else 'PEFT'} cell on {dataset}"))
            continue
        best_peft, best_full = peft.loc[peft[metric].idxmax()], full.loc[full[metric].idxmax()]
        body.append(
            Comparison(
                "Best PEFT vs best full fine-tune", best_peft, best_full, metric, "rq1",
                hours=planned_hours(best_peft, best_full),
            )
        )  # fmt: skip
    heat_maps(trained, figure_path)
    return body


def heat_maps(trained: pd.DataFrame, figure_path: Path) -> None:
    """One panel per test set, on its primary metric: models (smallest first) by method, each cell's value
    printed in it; it reads the same for one model and a few methods as for the paper's 12 and 9."""
    datasets = sorted(trained["dataset"].unique())
    methods = sorted(trained["variant"].unique())
    models = sorted(
        trained["model"].unique(), key=lambda m: (trained.loc[trained["model"] == m, "size_b"].max(), m)
    )
    width = max(5.0, 0.75 * len(methods) + 2.5)
    height = max(2.2, 0.42 * len(models) + 1.6)
    figure, axes = plt.subplots(
        len(datasets), 1, figsize=(width, height * len(datasets)), squeeze=False, constrained_layout=True
    )
    for axis, dataset in zip(axes[:, 0], datasets, strict=True):
        rows = trained[trained["dataset"] == dataset]
        grid = rows.pivot_table(index="model", columns="variant", values="score")
        grid = grid.reindex(index=[m for m in models if m in grid.index], columns=methods)
        image = axis.imshow(grid.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for (row, column), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if not np.isnan(value):
                colour = "black" if value > 0.6 else "white"
                axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
        axis.set_xticks(range(len(methods)), methods, rotation=35, ha="right", fontsize=9)
        axis.set_yticks(range(len(grid.index)), grid.index, fontsize=9)
        axis.set_title(f"{dataset}: {rows['metric'].iloc[0]} (blank: not run)", fontsize=11)
    figure.colorbar(image, ax=axes[:, 0].tolist(), label="primary metric (share of test set)", shrink=0.8)
    figure.suptitle("RQ1: each test set's primary metric by fine-tuning method and model")
    figure.savefig(figure_path, bbox_inches="tight")
    plt.close(figure)
