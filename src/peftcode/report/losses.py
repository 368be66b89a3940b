"""Each fine-tune's training and validation loss, from its ``train_log.csv``: a panel per training set, a
colour per method (and model), training loss as a line and validation loss as dots on it."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from peftcode.report.tables import no_cells_figure


def loss_figure(fine_tunes: list[dict], figure_path: Path) -> None:
    """``fine_tunes``: each fine-tune's ``model``, ``method``, ``dataset`` (its training set) and ``log``
    (the path of its train_log.csv)."""
    logs = [(tune, pd.read_csv(tune["log"])) for tune in fine_tunes if Path(tune["log"]).exists()]
    if not logs:
        no_cells_figure(figure_path, "No fine-tunes in this study")
        return
    datasets = sorted({tune["dataset"] for tune, _ in logs})
    figure, axes = plt.subplots(
        len(datasets), 1, figsize=(8, 3.2 * len(datasets)), squeeze=False, constrained_layout=True
    )
    colours = plt.get_cmap("tab10" if len(logs) <= 10 else "tab20").colors
    for axis, dataset in zip(axes[:, 0], datasets, strict=True):
        tunes = [(tune, log) for tune, log in logs if tune["dataset"] == dataset]
        for index, (tune, log) in enumerate(
            sorted(tunes, key=lambda pair: (pair[0]["model"], pair[0]["variant"]))
        ):
            colour, label = colours[index % len(colours)], f"{tune['variant']} ({tune['model']})"
            train, validation = log.dropna(subset=["train_loss"]), log.dropna(subset=["val_loss"])
            axis.plot(train["epoch"], train["train_loss"], color=colour, lw=1.2, alpha=0.8, label=label)
            axis.plot(validation["epoch"], validation["val_loss"], "o--", color=colour, markersize=4)
        axis.set_title(f"trained on {dataset}")
        axis.set_xlabel("epoch")
        axis.set_ylabel("loss (line: training; dots: validation)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="upper right", ncol=2)
    figure.suptitle("Training and validation loss of each fine-tune")
    figure.savefig(figure_path, bbox_inches="tight")
    plt.close(figure)
