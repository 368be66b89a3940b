"""RQ4: memory against effectiveness: each fine-tune's peaks beside the plan's estimate, QLoRA against
LoRA, and a scatter of peak memory against each test set's primary metric."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from peftcode.report.claims import PAPER, Comparison, Untested, finding_lines
from peftcode.report.tables import error_bars, fine_tuned, planned_hours, results_table
from peftcode.study.kinds import QLORA_BITS, UNQUANTIZED_LORA_KINDS

TITLE = "RQ4: memory against effectiveness"
MEMORY_COLUMNS = ["weights", "optimizer", "checkpointing", "weight_mb", "peak_mb", "own_mb", "estimated_mb"]


def memory_comparisons(trained: pd.DataFrame) -> list:
    """QLoRA against LoRA on the same model and test set: the ratio of peak memories beside the paper's
    claim, and whether effectiveness differs."""
    body = []
    trained = trained[trained["train_dataset"].isna()]  # joint or transferred adapters saw other data
    for (model, dataset), rows in trained.groupby(["model", "dataset"]):
        for _, qlora in rows[rows["kind"].isin(QLORA_BITS)].iterrows():
            # The LoRA whose options it shares (rank, alpha, dropout, targets, PEFT options), and the 4-bit
            # QLoRA of the same options.
            same = rows[rows["adapter_options"] == qlora["adapter_options"]]
            lora = same[same["kind"].isin(UNQUANTIZED_LORA_KINDS)]
            if lora.empty:
                body.append(
                    f"- {model} on {dataset}: {qlora['variant']} has no LoRA of its options to compare."
                )
                continue
            lora = lora.iloc[0]
            four_bit = same.loc[same["kind"].map(QLORA_BITS) == 4, "finetune_peak_mb"]
            peak = qlora["finetune_peak_mb"]
            ratio = peak / lora["finetune_peak_mb"]
            if QLORA_BITS[qlora["kind"]] == 4:
                low, high = PAPER["rq4"]["memory_ratio"]
                ours = (
                    "inside it" if low <= ratio <= high else ("saves less" if ratio > high else "saves more")
                )
                verdict = f"the paper: {low}-{high}x; ours {ours}"
            elif four_bit.empty:
                verdict = "no 4-bit cell to set it against"
            else:
                between = four_bit.iloc[0] <= peak <= lora["finetune_peak_mb"]
                verdict = f"{'' if between else 'not '}between LoRA and QLoRA-4bit"
            body.append(
                f"- {model} on {dataset}: {qlora['variant']} peaks at {peak:.0f} MB, {ratio:.2f}x "
                f"{lora['variant']}'s {lora['finetune_peak_mb']:.0f} MB ({verdict}), a measurement."
            )
            if bool(qlora["gradient_checkpointing"]) != bool(lora["gradient_checkpointing"]):
                body.append(
                    "  Gradient checkpointing is on for one and off for the other (QLoRA turns it on, as in "
                    "its recipe), so part of the difference is recomputed activations, not quantization."
                )
            body += ["", Comparison(
                f"Effectiveness, {qlora['variant']} vs {lora['variant']} ({model} on {dataset})", qlora, lora,
                qlora["metric"], None, "same", hours=planned_hours(qlora, lora),
            )]  # fmt: skip
    return body


def rq4(table: pd.DataFrame, figure_path: Path) -> list:
    trained = fine_tuned(table, figure_path)
    if trained.empty:
        return ["No fine-tuned cells in this study.", Untested("rq4", "no fine-tuned cells")]
    body = [
        "Each fine-tuning job's peak memory (MB; CUDA: peak allocated, CPU: peak resident set of the job's "
        "process), its own part of it (CUDA: peak reserved; CPU: less what the process held before "
        "loading anything, its libraries), the memory plan's estimate of that part, its weight footprint "
        "(MB) and the optimizer it ran with, against its test set's primary metric:",
        "",
    ]
    estimates = trained.get("estimated_peak_mb", pd.Series(index=trained.index, dtype=float))
    memory = trained.assign(
        weights=[
            f"{bits:.0f}-bit" if pd.notna(bits) else precision
            for bits, precision in zip(
                trained["quantization_bits"], trained["finetune_precision"], strict=True
            )
        ],
        checkpointing=trained["gradient_checkpointing"].map({True: "yes", False: "no"}),
        weight_mb=trained["finetune_weight_mb"].round().astype("Int64"),
        peak_mb=trained["finetune_peak_mb"].round().astype("Int64"),
        own_mb=trained["finetune_own_peak_mb"].round().astype("Int64"),
        estimated_mb=estimates.round().astype("Int64"),
    )
    for dataset, rows in memory.groupby("dataset"):
        columns = [*MEMORY_COLUMNS, "metric", "score", "codebleu"]
        body += [f"## {dataset}", "", results_table(rows, columns, "score"), ""]
    comparisons = memory_comparisons(trained)
    body += ["## QLoRA against LoRA", "", *finding_lines("rq4"), ""]
    body += comparisons or ["This run has no QLoRA and LoRA cells to compare."]
    body += ["", "![Figure 1: peak fine-tuning memory by method](figure1_memory.png)"]
    memory_scatter(trained, figure_path)
    return body


def memory_scatter(trained: pd.DataFrame, figure_path: Path) -> None:
    """Peak memory against each test set's primary metric: a marker per method, a colour per model, one
    legend for each (12 models and 9 methods make 21 entries, not 108), memory on a log scale."""
    trained = trained[trained["finetune_peak_mb"].notna()]
    methods = sorted(trained["method"].unique())
    models = sorted(
        trained["model"].unique(), key=lambda m: (trained.loc[trained["model"] == m, "size_b"].max(), m)
    )
    colours = dict(zip(models, plt.get_cmap("tab20" if len(models) > 10 else "tab10").colors, strict=False))
    markers = dict(zip(methods, "osD^v<>ph*XP8", strict=False))
    figure, axis = plt.subplots(figsize=(8, 4.8), constrained_layout=True)
    for (model, method), rows in trained.groupby(["model", "method"]):
        axis.errorbar(
            rows["finetune_peak_mb"], rows["score"], yerr=error_bars(rows, "score"), fmt=markers[method],
            color=colours[model], capsize=2, markersize=6, alpha=0.85, linestyle="none",
        )  # fmt: skip
    if trained["finetune_peak_mb"].max() > 10 * trained["finetune_peak_mb"].min():
        axis.set_xscale("log")
    axis.set_xlabel("peak memory of the fine-tuning job (MB)")
    axis.set_ylabel("test set's primary metric (95% CI)")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title("RQ4: peak memory against effectiveness, every dataset")
    method_handles = [
        Line2D([], [], marker=markers[m], color="grey", linestyle="none", label=m) for m in methods
    ]
    model_handles = [Patch(color=colours[m], label=m) for m in models]
    # Figure legends placed "outside" get their room from the constrained layout (an axis legend moved out
    # with bbox_to_anchor is cut off by the saved bounding box).
    figure.legend(handles=method_handles, title="method", fontsize=8, loc="outside right upper")
    figure.legend(handles=model_handles, title="model", fontsize=8, loc="outside right lower")
    figure.savefig(figure_path, bbox_inches="tight")
    plt.close(figure)
