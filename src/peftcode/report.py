"""RQ1-RQ4 reports: markdown tables and one PNG figure per research question, from the results table alone.

Every number carries its 95% bootstrap interval; a claim that one method beats another carries an exact
McNemar test on EM@1 over the same test examples, and the study's published claim beside ours. A question
whose cells are not in the table says so, and cells the study expects but has not finished are listed, so a
partial study still reports.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from peftcode.config import PEFT_KINDS  # noqa: E402
from peftcode.metrics import hits_at_k  # noqa: E402
from peftcode.stats import mcnemar_exact  # noqa: E402

TRAINED_KINDS = ("full-ft", *PEFT_KINDS)
CELL_COLUMNS = ["model", "method", "dataset"]
PAPER = yaml.safe_load(files("peftcode").joinpath("paper_claims.yaml").read_text())
plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "figure.dpi": 120})


def em_columns(table: pd.DataFrame) -> list[str]:
    ems = [c for c in table.columns if c.startswith("em@") and c[3:].isdigit()]
    return sorted(ems, key=lambda c: int(c[3:]))


def relative_gain(ours: float, baseline: float) -> float | None:
    """Relative improvement of ``ours`` over ``baseline`` in percent; None when the baseline is zero."""
    return None if baseline == 0 else 100 * (ours - baseline) / baseline


def agreement(value: float | None, expected: list[float]) -> str:
    """Whether our value agrees with the paper's range: in it, the same direction only, or against it."""
    low, high = expected
    if value is None:
        return "cannot be compared (our baseline scores 0)"
    if low <= value <= high:
        return "agrees"
    if (value > 0) == (low > 0):
        return "agrees in direction, not in size"
    return "disagrees"


def _gain_text(gain: float | None) -> str:
    return "n/a (baseline is 0)" if gain is None else f"{gain:+.1f}%"


def _with_ci(row, column: str) -> str:
    low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    if low is None or pd.isna(low):
        return f"{row[column]:.3f}"
    return f"{row[column]:.3f} [{low:.3f}, {high:.3f}]"


def _model_label(row) -> str:
    return row["model"] if row["pretrained"] else f"{row['model']} (untrained)"


def _markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".3f")


def _mcnemar_em1(first, second) -> float:
    return mcnemar_exact(hits_at_k(list(first["ranks"]), 1), hits_at_k(list(second["ranks"]), 1))


def _comparison(name: str, ours, baseline, column: str, claim: dict) -> list[str]:
    gain = relative_gain(ours[column], baseline[column])
    p_value = _mcnemar_em1(ours, baseline)
    return [
        f"{name}: {ours['method']} ({ours['model']}) reaches {column} {_with_ci(ours, column)} against "
        f"{_with_ci(baseline, column)} for {baseline['method']} ({baseline['model']}), "
        f"{_gain_text(gain)} relative; exact McNemar test on EM@1: p = {p_value:.3g}"
        f"{' (significant at 0.05)' if p_value < 0.05 else ' (not significant at 0.05)'}.",
        f"The paper: {claim['claim']} Our run {agreement(gain, claim['relative_gain'])}.",
        "",
    ]


def _results_table(rows: pd.DataFrame, columns: list[str], sort: str) -> str:
    view = rows.sort_values(sort, ascending=False).copy()
    for column in [c for c in columns if f"{c}_ci_low" in rows.columns]:
        view[column] = [_with_ci(row, column) for _, row in view.iterrows()]
    view["model"] = [_model_label(row) for _, row in view.iterrows()]
    return _markdown(view[["model", "method", *columns]])


def _no_cells_figure(path: Path, message: str) -> None:
    figure, axis = plt.subplots(figsize=(6, 2.5))
    axis.axis("off")
    axis.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)


def _error_bars(rows: pd.DataFrame, column: str) -> list[list[float]]:
    if f"{column}_ci_low" not in rows.columns:
        return [[0.0] * len(rows), [0.0] * len(rows)]
    return [list(rows[column] - rows[f"{column}_ci_low"]), list(rows[f"{column}_ci_high"] - rows[column])]


# --- RQ1 -----------------------------------------------------------------------------------------------
def rq1(table: pd.DataFrame, figure_path: Path) -> list[str]:
    trained = table[table["kind"].isin(TRAINED_KINDS)]
    if trained.empty:
        _no_cells_figure(figure_path, "No fine-tuned cells in this study")
        return ["No fine-tuned cells in this study."]
    ems = em_columns(trained)
    top = ems[-1]
    lines = []
    for dataset, rows in trained.groupby("dataset"):
        lines += [f"## {dataset}", "", _results_table(rows, [*ems, "codebleu", "trainable_params"], top), ""]
        full, peft = rows[rows["kind"] == "full-ft"], rows[rows["kind"].isin(PEFT_KINDS)]
        if not full.empty and not peft.empty:
            best_peft, best_full = peft.loc[peft[top].idxmax()], full.loc[full[top].idxmax()]
            lines += _comparison("Best PEFT vs best full fine-tune", best_peft, best_full, top, PAPER["rq1"])
    datasets = sorted(trained["dataset"].unique())
    figure, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for axis, dataset in zip(axes[0], datasets, strict=True):
        rows = trained[trained["dataset"] == dataset].sort_values("method")
        width = 0.8 / len(ems)
        for offset, column in enumerate(ems):
            positions = [i + offset * width for i in range(len(rows))]
            axis.bar(
                positions,
                rows[column],
                width=width,
                yerr=_error_bars(rows, column),
                capsize=2,
                label=column.upper(),
            )
        labels = [f"{row['method']}\n{_model_label(row)}" for _, row in rows.iterrows()]
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], labels, rotation=30, ha="right")
        axis.set_ylabel("exact match (share of test set)")
        axis.set_ylim(0, 1)
        axis.set_title(dataset)
        axis.legend(fontsize=9, title="95% bootstrap CI", title_fontsize=8)
        if rows[ems].to_numpy().max() == 0:
            axis.text(0.5, 0.5, "no exact match in any cell", transform=axis.transAxes, ha="center")
    figure.suptitle("RQ1: exact match at k by fine-tuning method")
    figure.savefig(figure_path, bbox_inches="tight")
    plt.close(figure)
    return lines


# --- RQ2 -----------------------------------------------------------------------------------------------
def rq2(table: pd.DataFrame, figure_path: Path) -> list[str]:
    icl, peft = table[table["kind"] == "icl"], table[table["kind"].isin(PEFT_KINDS)]
    icl = icl.astype({"shots": int, "seed": int})
    if icl.empty:
        _no_cells_figure(figure_path, "No in-context learning cells in this study")
        return ["No in-context learning cells in this study."]
    top = em_columns(table)[-1]
    summary = (
        icl.groupby(["dataset", "model", "shots"])
        .agg(
            seeds=("seed", "count"),
            mean=(top, "mean"),
            std=(top, "std"),
            codebleu_mean=("codebleu", "mean"),
            codebleu_std=("codebleu", "std"),
        )
        .reset_index()
        .fillna({"std": 0.0, "codebleu_std": 0.0})
    )
    lines = [f"In-context learning, mean and standard deviation over seeds of {top} and CodeBLEU:", ""]
    lines += [_markdown(summary.rename(columns={"mean": f"{top} mean", "std": f"{top} std"})), ""]
    datasets = sorted(icl["dataset"].unique())
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for axis, dataset in zip(axes[0], datasets, strict=True):
        for model, rows in summary[summary["dataset"] == dataset].groupby("model"):
            axis.errorbar(
                rows["shots"],
                rows["mean"],
                yerr=rows["std"],
                marker="o",
                capsize=4,
                label=f"{model}: ICL (mean ± std over seeds)",
            )
            best = peft[(peft["dataset"] == dataset) & (peft["model"] == model)]
            if best.empty:
                continue
            winner = best.loc[best[top].idxmax()]
            cells = icl[(icl["dataset"] == dataset) & (icl["model"] == model)]
            best_icl = cells.loc[cells[top].idxmax()]
            axis.axhline(winner[top], linestyle="--", color="black", label=f"{model}: {winner['method']}")
            lines += [f"### {dataset}, {model}", ""]
            lines += _comparison("Best PEFT vs best ICL cell", winner, best_icl, top, PAPER["rq2"])
        axis.set_xlabel("in-context examples (shots)")
        axis.set_ylabel(f"{top.upper()} (share of test set)")
        axis.set_ylim(0, 1)
        axis.set_xticks(sorted(icl["shots"].unique()))
        axis.set_title(dataset)
        axis.legend(fontsize=8)
    figure.suptitle("RQ2: in-context learning vs the best PEFT method (dashed)")
    figure.savefig(figure_path, bbox_inches="tight")
    plt.close(figure)
    return lines


# --- RQ3 -----------------------------------------------------------------------------------------------
def rq3(table: pd.DataFrame, figure_path: Path) -> list[str]:
    if "train_dataset" not in table.columns or table["train_dataset"].isna().all():
        _no_cells_figure(figure_path, "No jointly trained cells in this study")
        return ["No jointly trained cells in this study: RQ3 is not answered by this run."]
    top = em_columns(table)[-1]
    lora = table[table["kind"] == "lora"].copy()
    lora["training"] = lora["train_dataset"].fillna("per-dataset")
    lines = [_markdown(lora[["dataset", "model", "method", "training", top, "codebleu"]]), ""]
    axis = lora.pivot_table(index="dataset", columns="training", values=top).plot.bar(figsize=(6, 4), rot=0)
    axis.set_ylabel(f"{top.upper()} (share of test set)")
    axis.set_title("RQ3: joint vs per-dataset LoRA")
    axis.figure.savefig(figure_path, bbox_inches="tight")
    plt.close(axis.figure)
    return lines


# --- RQ4 -----------------------------------------------------------------------------------------------
def rq4(table: pd.DataFrame, figure_path: Path) -> list[str]:
    trained = table[table["kind"].isin(TRAINED_KINDS) | table["kind"].str.startswith("qlora")]
    if trained.empty:
        _no_cells_figure(figure_path, "No fine-tuned cells in this study")
        return ["No fine-tuned cells in this study."]
    top = em_columns(trained)[-1]
    lines = ["Peak memory of each fine-tuning job (MB) against its effectiveness:", ""]
    for dataset, rows in trained.groupby("dataset"):
        lines += [
            f"## {dataset}",
            "",
            _results_table(rows, ["finetune_peak_rss_mb", top, "codebleu"], top),
            "",
        ]
    if not trained["kind"].str.startswith("qlora").any():
        lines.append(
            f"The paper: {PAPER['rq4']['claim']} This run has no QLoRA cells, so it cannot check that."
        )
    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {m: palette[i % len(palette)] for i, m in enumerate(sorted(trained["method"].unique()))}
    markers = {d: "osD^v<>ph*"[i % 10] for i, d in enumerate(sorted(trained["dataset"].unique()))}
    for (dataset, method), rows in trained.groupby(["dataset", "method"]):
        axis.errorbar(
            rows["finetune_peak_rss_mb"],
            rows[top],
            yerr=_error_bars(rows, top),
            fmt=markers[dataset],
            color=colours[method],
            capsize=3,
            label=f"{method} ({dataset})",
        )
    axis.set_xlabel("peak memory of the fine-tuning job (MB)")
    axis.set_ylabel(f"{top.upper()} (share of test set)")
    axis.set_title("RQ4: peak memory vs effectiveness")
    axis.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    figure.savefig(figure_path, bbox_inches="tight")
    plt.close(figure)
    return lines


QUESTIONS = {
    "rq1": ("RQ1: PEFT-tuned LLMs vs fully fine-tuned models", rq1),
    "rq2": ("RQ2: PEFT vs in-context learning", rq2),
    "rq3": ("RQ3: one LoRA adapter trained jointly vs one per dataset", rq3),
    "rq4": ("RQ4: memory against effectiveness", rq4),
}


def missing_cells(table: pd.DataFrame, expected: list[dict] | None) -> list[str]:
    if not expected:
        return []
    present = set(map(tuple, table[CELL_COLUMNS].itertuples(index=False))) if len(table) else set()
    return [
        f"{c['model']} / {c['method']} / {c['dataset']}"
        for c in expected
        if (c["model"], c["method"], c["dataset"]) not in present
    ]


def write_reports(table: pd.DataFrame | str | Path, out_dir: str | Path, expected: list[dict] | None = None):
    """Write ``rq1.md`` .. ``rq4.md`` and ``rq1.png`` .. ``rq4.png`` under ``out_dir``; ``expected`` cells
    that the table lacks are listed at the top of every report."""
    if not isinstance(table, pd.DataFrame):
        table = pd.read_parquet(table)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = missing_cells(table, expected)
    preface = []
    if missing:
        preface = [
            f"**Partial report: {len(missing)} of {len(expected)} cells have not finished:**",
            "",
            *[f"- {cell}" for cell in missing],
            "",
        ]
    for name, (title, build) in QUESTIONS.items():
        figure = out_dir / f"{name}.png"
        body = build(table, figure) if len(table) else _empty(figure)
        text = "\n".join([f"# {title}", "", *preface, *body, "", f"![{name}]({name}.png)", ""])
        (out_dir / f"{name}.md").write_text(text)


def _empty(figure: Path) -> list[str]:
    _no_cells_figure(figure, "No finished cells yet")
    return ["No finished cells yet."]
