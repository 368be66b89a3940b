"""RQ3: one adapter trained jointly on several datasets against one per dataset, on each test set's
primary metric; the figure is a bar per adapter and test set."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from peftcode.report.claims import Comparison, Untested, finding_lines
from peftcode.report.tables import no_cells_figure, planned_hours, results_table, with_primary

TITLE = "RQ3: one LoRA adapter trained jointly vs one per dataset"


def rq3(table: pd.DataFrame, figure_path: Path) -> list:
    joint = table[table["joint"]]
    table = table[~table["transfer"]]
    if joint.empty:
        no_cells_figure(figure_path, "No jointly trained cells in this study")
        return [
            "No jointly trained cells in this study: RQ3 is not answered by this run.",
            Untested("rq3", "no cells"),
        ]
    pairs = joint[["model", "method", "dataset"]].drop_duplicates()
    compared = with_primary(table.merge(pairs, on=["model", "method", "dataset"]))
    compared["training"] = compared["train_dataset"].fillna("per-dataset")
    body = [
        "Each adapter on each test set, on its primary metric; a joint adapter was trained once on the union "
        "of the datasets:",
        "",
        results_table(compared, ["dataset", "training", "metric", "score", "codebleu"], "score"),
        "",
        *finding_lines("rq3"),
        "",
    ]
    for (model, dataset, group), rows in compared.groupby(["model", "dataset", "method"]):
        alone = rows[rows["training"] == "per-dataset"]
        for _, together in rows[rows["training"] != "per-dataset"].iterrows():
            if alone.empty:
                body.append(Untested("rq3", f"no per-dataset {group} cell of {model} on {dataset}"))
                continue
            trained_on = together["train_dataset"]
            title = f"{model} on {dataset}, {together['variant']} (trained on {trained_on}) vs {group}"
            body.append(
                Comparison(
                    title, together, alone.iloc[0], together["metric"], None, "same",
                    hours=planned_hours(together, alone.iloc[0]),
                )
            )  # fmt: skip
    compared["cell"] = compared["model"] + "\non " + compared["dataset"] + "\n(" + compared["metric"] + ")"
    bars = compared.pivot_table(index="cell", columns="training", values="score")
    figure, axis = plt.subplots(figsize=(min(14.0, max(6.5, 1.4 * len(bars) + 2)), 4))
    bars.plot.bar(ax=axis, rot=0 if len(bars) <= 6 else 30, fontsize=9)
    axis.set_xlabel("model, test set (its primary metric)")
    axis.set_ylabel("primary metric (share of test set)")
    axis.set_title("RQ3: joint vs per-dataset adapters")
    axis.legend(title="trained on", fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.savefig(figure_path, bbox_inches="tight")
    plt.close(figure)
    return body
