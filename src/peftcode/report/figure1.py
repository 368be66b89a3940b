"""The study's Figure 1: peak fine-tuning memory by method and model."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import Patch

from peftcode.report.tables import no_cells_figure
from peftcode.study.kinds import FULL_WEIGHT_KINDS, LORA_KINDS

# The bars of Figure 1, in the study's order: each method of these kinds (DoRA is a LoRA method of its own);
# other trained kinds are left out of it.
FIGURE1_KINDS = (*FULL_WEIGHT_KINDS, *LORA_KINDS)


def figure1(table: pd.DataFrame, figure_path: Path) -> None:
    """The study's Figure 1: peak fine-tuning memory of full fine-tuning, LoRA and QLoRA per model (the
    largest over the datasets every one of them ran on), the weight footprint hatched inside each bar."""
    rows = table[table["kind"].isin(FIGURE1_KINDS)] if len(table) else table
    if rows.empty:
        no_cells_figure(figure_path, "No full fine-tuning, LoRA or QLoRA cells in this study")
        return
    rows = rows[rows["train_dataset"].isna()]  # a joint or transferred adapter trained on other data
    # Peaks grow with sequence length: compare each model's methods on the datasets all of them ran on.
    # Each method by its name, its kind beside where the name does not say it (dora (lora)).
    rows = rows.assign(
        bar=[m if m == k else f"{m} ({k})" for m, k in zip(rows["variant"], rows["kind"], strict=True)]
    )
    methods_run = rows.groupby(["model", "dataset"])["bar"].agg(frozenset)
    every_method = rows.groupby("model")["bar"].agg(frozenset)
    shared = [every_method[model] == methods for (model, _), methods in methods_run.items()]
    if any(shared):
        keep = methods_run[shared].index
        rows = rows[pd.MultiIndex.from_frame(rows[["model", "dataset"]]).isin(keep)]
    peaks = rows.groupby(["model", "bar"])[["finetune_peak_mb", "finetune_weight_mb"]].max()
    models = sorted(peaks.index.get_level_values("model").unique())
    order = rows.drop_duplicates("bar").assign(rank=lambda r: r["kind"].map(FIGURE1_KINDS.index))
    bars = list(order.sort_values(["rank", "variant"])["bar"])
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {bar: palette[i % len(palette)] for i, bar in enumerate(bars)}
    width = 0.8 / peaks.groupby("model").size().max()
    # An inch or so a model, however many: the paper's 12 models stay on one page.
    figure, axis = plt.subplots(figsize=(min(14.0, max(6.0, 1.1 * len(models) + 2)), 4.5))
    labelled = len(models) * len(bars) <= 16  # values over the bars only where they fit
    for index, model in enumerate(models):
        # Each model's bars centred on its tick, however many of the methods it ran.
        of_model = peaks.loc[model].reindex([b for b in bars if b in peaks.loc[model].index])
        for offset, (name, bar) in enumerate(of_model.iterrows()):
            position = index + (offset - (len(of_model) - 1) / 2) * width
            drawn = axis.bar(position, bar["finetune_peak_mb"], width, color=colours[name])
            axis.bar(
                position, bar["finetune_weight_mb"], width, fill=False, hatch="//", edgecolor="black", lw=0
            )
            if labelled:
                axis.bar_label(drawn, fmt="%.0f", fontsize=8)
    handles = [Patch(color=colours[bar], label=bar) for bar in bars]
    handles.append(Patch(fill=False, hatch="//", edgecolor="black", lw=0, label="of which model weights"))
    axis.legend(handles=handles, fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))
    axis.set_xticks(
        range(len(models)),
        models,
        rotation=30 if len(models) > 4 else 0,
        ha="right" if len(models) > 4 else "center",
    )
    if peaks["finetune_peak_mb"].max() > 20 * peaks["finetune_peak_mb"].min():
        axis.set_yscale("log")
    axis.set_ylabel("peak memory of the fine-tuning job (MB)")
    axis.set_title("Figure 1: peak fine-tuning memory by method")
    figure.savefig(figure_path, bbox_inches="tight")
    plt.close(figure)
