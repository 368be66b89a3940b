"""RQ1-RQ4 reports: markdown tables and one PNG figure per research question, from the results table alone.

A question whose cells are not in the study says so instead of failing, so a partial study still reports.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from peftcode.config import PEFT_KINDS  # noqa: E402

plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "figure.dpi": 120})


def _em_columns(table: pd.DataFrame) -> list[str]:
    return sorted((c for c in table.columns if c.startswith("em@")), key=lambda c: int(c[3:]))


def _top_em(table: pd.DataFrame) -> str:
    return _em_columns(table)[-1]


def _model_label(row) -> str:
    return row["model"] if row["pretrained"] else f"{row['model']} (untrained)"


def _markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".3f")


def _empty_figure(path: Path, message: str) -> None:
    figure, axis = plt.subplots(figsize=(6, 2.5))
    axis.axis("off")
    axis.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)


def relative_gain(ours: float, baseline: float) -> float | None:
    """Relative improvement of ``ours`` over ``baseline`` in percent; None when the baseline is zero."""
    return None if baseline == 0 else 100 * (ours - baseline) / baseline


def _fmt_gain(gain: float | None) -> str:
    return "n/a (baseline is 0)" if gain is None else f"{gain:+.1f}%"


# --- RQ1 -----------------------------------------------------------------------------------------------
def rq1(table: pd.DataFrame, figure_path: Path) -> str:
    trained = table[table["kind"].isin(("full-ft", *PEFT_KINDS))].copy()
    lines = ["# RQ1: PEFT-tuned LLMs vs fully fine-tuned models", ""]
    if trained.empty:
        _empty_figure(figure_path, "No fine-tuned cells in this study")
        return "\n".join([*lines, "No fine-tuned cells in this study."])
    ems = _em_columns(trained)
    top = ems[-1]
    trained["model"] = trained.apply(_model_label, axis=1)
    columns = ["model", "method", *ems, "codebleu", "trainable_params", "finetune_peak_rss_mb"]
    for dataset, rows in trained.groupby("dataset"):
        lines += [f"## {dataset}", "", _markdown(rows[columns].sort_values(top, ascending=False)), ""]
        full, peft = rows[rows["kind"] == "full-ft"], rows[rows["kind"].isin(PEFT_KINDS)]
        if not full.empty and not peft.empty:
            best_peft, best_full = peft.loc[peft[top].idxmax()], full.loc[full[top].idxmax()]
            gain = relative_gain(best_peft[top], best_full[top])
            lines += [
                f"Best PEFT cell ({best_peft['model']}, {best_peft['method']}) reaches {top} "
                f"{best_peft[top]:.3f} against {best_full[top]:.3f} for the best full fine-tune "
                f"({best_full['model']}): {_fmt_gain(gain)} relative.",
                "",
            ]
    datasets = sorted(trained["dataset"].unique())
    figure, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for axis, dataset in zip(axes[0], datasets, strict=True):
        rows = trained[trained["dataset"] == dataset]
        labels = [f"{m}\n{meth}" for m, meth in zip(rows["model"], rows["method"], strict=True)]
        width = 0.8 / len(ems)
        for offset, column in enumerate(ems):
            positions = [i + offset * width for i in range(len(rows))]
            axis.bar(positions, rows[column], width=width, label=column.upper())
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], labels, rotation=30, ha="right")
        axis.set_ylabel("exact match (share of test set)")
        axis.set_ylim(0, 1)
        axis.set_title(dataset)
        axis.legend(fontsize=9)
    figure.suptitle("RQ1: exact match at k by model and fine-tuning method")
    figure.savefig(figure_path, bbox_inches="tight")
    plt.close(figure)
    return "\n".join(lines)


# --- RQ2 -----------------------------------------------------------------------------------------------
def rq2(table: pd.DataFrame, figure_path: Path) -> str:
    lines = ["# RQ2: PEFT vs in-context learning", ""]
    icl = table[table["kind"] == "icl"]
    peft = table[table["kind"].isin(PEFT_KINDS)]
    if icl.empty:
        _empty_figure(figure_path, "No in-context learning cells in this study")
        return "\n".join([*lines, "No in-context learning cells in this study."])
    top = _top_em(table)
    summary = (
        icl.groupby(["dataset", "model", "shots"])
        .agg(
            seeds=("seed", "count"),
            em_mean=(top, "mean"),
            em_std=(top, "std"),
            codebleu_mean=("codebleu", "mean"),
            codebleu_std=("codebleu", "std"),
        )
        .reset_index()
        .fillna({"em_std": 0.0, "codebleu_std": 0.0})
    )
    summary = summary.rename(columns={"em_mean": f"{top} mean", "em_std": f"{top} std"})
    lines += [f"In-context learning, mean and standard deviation over seeds ({top}, CodeBLEU):", ""]
    lines += [_markdown(summary), ""]
    datasets = sorted(icl["dataset"].unique())
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for axis, dataset in zip(axes[0], datasets, strict=True):
        for model, rows in summary[summary["dataset"] == dataset].groupby("model"):
            axis.errorbar(
                rows["shots"],
                rows[f"{top} mean"],
                yerr=rows[f"{top} std"],
                marker="o",
                capsize=4,
                label=f"{model}: ICL",
            )
            best = peft[(peft["dataset"] == dataset) & (peft["model"] == model)]
            if not best.empty:
                winner = best.loc[best[top].idxmax()]
                best_icl = rows[f"{top} mean"].max()
                axis.axhline(winner[top], linestyle="--", color="black", label=f"{model}: {winner['method']}")
                lines.append(
                    f"- {dataset}, {model}: best PEFT method {winner['method']} reaches {top} "
                    f"{winner[top]:.3f}; best ICL setting {best_icl:.3f} "
                    f"({_fmt_gain(relative_gain(winner[top], best_icl))} relative for PEFT)."
                )
        axis.set_xlabel("in-context examples (shots)")
        axis.set_ylabel(f"{top.upper()} (share of test set)")
        axis.set_ylim(0, 1)
        axis.set_title(dataset)
        axis.legend(fontsize=9)
    figure.suptitle("RQ2: in-context learning (mean ± std over seeds) vs the best PEFT method")
    figure.savefig(figure_path, bbox_inches="tight")
    plt.close(figure)
    return "\n".join(lines)


# --- RQ3 -----------------------------------------------------------------------------------------------
def rq3(table: pd.DataFrame, figure_path: Path) -> str:
    lines = ["# RQ3: one LoRA adapter trained jointly vs one per dataset", ""]
    if "train_dataset" not in table.columns or table["train_dataset"].isna().all():
        _empty_figure(figure_path, "No jointly trained cells in this study")
        return "\n".join([*lines, "No jointly trained cells in this study: RQ3 is not answered by this run."])
    top = _top_em(table)
    lora = table[table["kind"] == "lora"].copy()
    lora["training"] = lora["train_dataset"].where(lora["train_dataset"].notna(), "per-dataset")
    columns = ["dataset", "model", "method", "training", top, "codebleu"]
    lines += [_markdown(lora[columns].sort_values(["dataset", "model"])), ""]
    pivot = lora.pivot_table(index="dataset", columns="training", values=top)
    axis = pivot.plot.bar(figsize=(6, 4), rot=0)
    axis.set_ylabel(f"{top.upper()} (share of test set)")
    axis.set_title("RQ3: joint vs per-dataset LoRA")
    axis.figure.savefig(figure_path, bbox_inches="tight")
    plt.close(axis.figure)
    return "\n".join(lines)


# --- RQ4 -----------------------------------------------------------------------------------------------
def rq4(table: pd.DataFrame, figure_path: Path) -> str:
    lines = ["# RQ4: memory against effectiveness", ""]
    trained = table[table["kind"].isin(("full-ft", *PEFT_KINDS))].copy()
    if trained.empty:
        _empty_figure(figure_path, "No fine-tuned cells in this study")
        return "\n".join([*lines, "No fine-tuned cells in this study."])
    top = _top_em(trained)
    columns = ["dataset", "model", "method", "finetune_peak_rss_mb", "trainable_params", top, "codebleu"]
    lines += [
        "Peak resident memory of each fine-tuning job (MB) against its effectiveness:",
        "",
        _markdown(trained[columns].sort_values(["dataset", "finetune_peak_rss_mb"])),
        "",
    ]
    if not trained["kind"].str.startswith("qlora").any():
        lines.append("No QLoRA cells in this study: memory is compared across the methods that ran.")
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for (dataset, method), rows in trained.groupby(["dataset", "method"]):
        axis.scatter(rows["finetune_peak_rss_mb"], rows[top], s=60, label=f"{method} ({dataset})")
    axis.set_xlabel("peak memory of the fine-tuning job (MB)")
    axis.set_ylabel(f"{top.upper()} (share of test set)")
    axis.set_title("RQ4: peak memory vs effectiveness")
    axis.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    figure.savefig(figure_path, bbox_inches="tight")
    plt.close(figure)
    return "\n".join(lines)


def write_reports(table_path: str | Path, out_dir: str | Path) -> None:
    """Write ``rq1.md`` .. ``rq4.md`` and ``rq1.png`` .. ``rq4.png`` under ``out_dir``."""
    table = pd.read_parquet(table_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, build in (("rq1", rq1), ("rq2", rq2), ("rq3", rq3), ("rq4", rq4)):
        text = build(table, out_dir / f"{name}.png")
        (out_dir / f"{name}.md").write_text(f"{text}\n\n![{name}]({name}.png)\n")
