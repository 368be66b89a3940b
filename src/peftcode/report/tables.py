"""What every report shares: the metric a test set is judged by, each cell's per-example outcomes on it,
numbers with their intervals, and the tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from peftcode.evaluation.scores import hits_at_k, pass_at_k  # noqa: E402
from peftcode.study.kinds import TRAINED_KINDS  # noqa: E402

CELL_COLUMNS = ["model", "variant", "dataset"]
plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "figure.dpi": 120})


def em_columns(table: pd.DataFrame) -> list[str]:
    ems = [c for c in table.columns if c.startswith("em@") and c[3:].isdigit()]
    return sorted(ems, key=lambda c: int(c[3:]))


def pass_columns(rows: pd.DataFrame) -> list[str]:
    """The pass@k columns with a value in ``rows`` (test sets with tests only)."""
    columns = [c for c in rows.columns if c.startswith("pass@") and c[5:].isdigit() and rows[c].notna().any()]
    return sorted(columns, key=lambda c: int(c[5:]))


def primary_metric(rows: pd.DataFrame) -> str:
    """The metric a test set is judged by: its setting (``primary_metric``, pass@1 where it has tests and
    EM at the largest k otherwise, see config), or, in a table without it, the same rule on its columns."""
    if "primary_metric" in rows.columns and rows["primary_metric"].notna().any():
        metric = rows["primary_metric"].dropna().iloc[0]
        if metric in rows.columns and rows[metric].notna().any():
            return metric
    passes = pass_columns(rows)
    return passes[0] if passes else em_columns(rows)[-1]


def with_primary(table: pd.DataFrame) -> pd.DataFrame:
    """The table with each row's test set's primary metric as ``metric`` and its value as ``score``."""
    table = table.copy()
    metrics = {dataset: primary_metric(rows) for dataset, rows in table.groupby("dataset")}
    table["metric"] = table["dataset"].map(metrics)
    table["score"] = [row[row["metric"]] for _, row in table.iterrows()]
    for end in ("low", "high"):
        table[f"score_ci_{end}"] = [row.get(f"{row['metric']}_ci_{end}") for _, row in table.iterrows()]
    return table


def per_example(row, metric: str) -> tuple[list[float], bool]:
    """A cell's outcome on each example of its test set under ``metric``, and whether each is a pass or a
    miss (EM@k, greedy pass@1) rather than an estimate (sampled pass@k)."""
    k = int(metric.split("@")[1])
    if metric.startswith("em@"):
        return [float(hit) for hit in hits_at_k(list(row["ranks"]), k)], True
    samples = int(row["pass_samples"])
    return [pass_at_k(samples, int(c), k) for c in row["passes"]], samples == 1 and k == 1


def with_ci(row, column: str) -> str:
    low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    if low is None or pd.isna(low):
        return f"{row[column]:.3f}"
    return f"{row[column]:.3f} [{low:.3f}, {high:.3f}]"


def model_label(row) -> str:
    return row["model"] if row["pretrained"] else f"{row['model']} (untrained)"


def markdown_table(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".3f")


def results_table(rows: pd.DataFrame, columns: list[str], sort: str) -> str:
    view = rows.sort_values(sort, ascending=False).copy()
    for column in [c for c in columns if f"{c}_ci_low" in rows.columns]:
        view[column] = [with_ci(row, column) for _, row in view.iterrows()]
    view["model"] = [model_label(row) for _, row in view.iterrows()]
    return markdown_table(view[["model", "variant", *columns]])


def no_cells_figure(path: Path, message: str) -> None:
    figure, axis = plt.subplots(figsize=(6, 2.5))
    axis.axis("off")
    axis.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)


def error_bars(rows: pd.DataFrame, column: str) -> list[list[float]]:
    if f"{column}_ci_low" not in rows.columns:
        return [[0.0] * len(rows), [0.0] * len(rows)]
    low, high = rows[f"{column}_ci_low"].astype(float), rows[f"{column}_ci_high"].astype(float)
    return [list(rows[column] - low.fillna(rows[column])), list(high.fillna(rows[column]) - rows[column])]


def fine_tuned(table: pd.DataFrame, figure_path: Path) -> pd.DataFrame:
    """The fine-tuned cells, each with its test set's primary metric; where there are none, the figure
    says so and the frame is empty."""
    trained = table[table["kind"].isin(TRAINED_KINDS)]
    if trained.empty:
        no_cells_figure(figure_path, "No fine-tuned cells in this study")
        return trained
    return with_primary(trained)


def planned_hours(*rows) -> float | None:
    """The plan's GPU-hours of these cells together, where it has them all."""
    hours = [row.get("planned_gpu_hours") for row in rows]
    return None if any(h is None or pd.isna(h) for h in hours) else float(sum(hours))
