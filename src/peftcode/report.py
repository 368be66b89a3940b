"""RQ1-RQ4 reports: markdown tables and one PNG figure per research question, plus the study's Figure 1
(peak fine-tuning memory by method), from the results table alone; each report also as one HTML page with
its figure inside, for Snakemake's HTML report (which shows HTML and images, and offers markdown only as a
download).

Every number carries its 95% bootstrap interval; a claim that one method beats another carries an exact
McNemar test on EM@1 over the same test examples, and the study's published claim beside ours. A question
whose cells are not in the table says so, and cells the study expects but has not finished are listed, so a
partial study still reports.
"""

from __future__ import annotations

import base64
from importlib.resources import files
from pathlib import Path

import markdown
import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from peftcode.config import PEFT_KINDS, TRAINED_KINDS  # noqa: E402
from peftcode.metrics import hits_at_k  # noqa: E402
from peftcode.stats import mcnemar_exact  # noqa: E402

CELL_COLUMNS = ["model", "method", "dataset"]
PAPER = yaml.safe_load(files("peftcode").joinpath("paper_claims.yaml").read_text())
plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "figure.dpi": 120})


def em_columns(table: pd.DataFrame) -> list[str]:
    ems = [c for c in table.columns if c.startswith("em@") and c[3:].isdigit()]
    return sorted(ems, key=lambda c: int(c[3:]))


def pass_columns(rows: pd.DataFrame) -> list[str]:
    """The pass@k columns with a value in ``rows`` (test sets with tests only)."""
    columns = [c for c in rows.columns if c.startswith("pass@") and c[5:].isdigit() and rows[c].notna().any()]
    return sorted(columns, key=lambda c: int(c[5:]))


def relative_gain(ours: float, baseline: float) -> float | None:
    """Relative improvement of ``ours`` over ``baseline`` in percent; None when the baseline is zero."""
    return None if baseline == 0 else 100 * (ours - baseline) / baseline


def agreement(value: float | None, expected: list[float] | None) -> str:
    """Whether our value agrees with a range: in it, the same direction only, or against it. Without a
    range (``expected`` None), the claim is one of a gain."""
    if value is None:
        return "cannot be compared (our baseline scores 0)"
    if expected is None:
        return "agrees" if value > 0 else "disagrees"
    low, high = expected
    if low <= value <= high:
        return "agrees"
    if (value > 0) == (low > 0):
        return "agrees in direction, not in size"
    return "disagrees"


def claim_lines(claim: dict, gain: float | None = None, compared: bool = False) -> list[str]:
    """A claim as the reports state it: the study's qualitative finding with its source, how we check it
    (with our verdict when ``compared``, from the relative ``gain``), then, where a number is claimed, its
    range with its standing and where ours falls."""
    lines = [f"The study finds ({claim['source']}): {claim['finding']}"]
    check = claim.get("check")
    if check:
        verdict = f": ours {agreement(gain, None)}" if compared else ""
        lines.append(f"Checked as {check['text']} ({check['source']}){verdict}.")
    if compared and "range" in claim:
        claimed = claim["range"]
        standing = {"secondary": "a secondary summary's figure, not found in the paper's text we checked"}
        lines.append(
            f"A range, {claimed['text']} ({standing.get(claimed['source'], claimed['source'])}): ours "
            f"{_gain_text(gain)}, {agreement(gain, claimed['relative_gain'])}."
        )
    return lines


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
        *claim_lines(claim, gain, compared=True),
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
        columns = [*ems, "codebleu", *pass_columns(rows), "trainable_params"]
        lines += [f"## {dataset}", ""]
        # Cells trained on another dataset and tested on this one, apart from those trained on it.
        for trained_on, group in rows[rows["transfer"]].groupby("train_dataset"):
            lines += [
                f"Trained on {trained_on}, tested on {dataset}:",
                "",
                _results_table(group, columns, top),
                "",
            ]
        rows = rows[~rows["transfer"]]
        if rows.empty:
            continue
        lines += [_results_table(rows, columns, top), ""]
        full, peft = rows[rows["kind"] == "full-ft"], rows[rows["kind"].isin(PEFT_KINDS)]
        if not full.empty and not peft.empty:
            best_peft, best_full = peft.loc[peft[top].idxmax()], full.loc[full[top].idxmax()]
            lines += _comparison("Best PEFT vs best full fine-tune", best_peft, best_full, top, PAPER["rq1"])
    _heat_maps(trained, top, figure_path)
    return lines


def _heat_maps(trained: pd.DataFrame, top: str, figure_path: Path) -> None:
    """One panel per test set: models (smallest first) by method, each cell's value printed in it; it reads
    the same for one model and a few methods as for the paper's 12 models and 9 methods."""
    datasets = sorted(trained["dataset"].unique())
    methods = sorted(trained["method"].unique())
    models = sorted(
        trained["model"].unique(), key=lambda m: (trained.loc[trained["model"] == m, "size_b"].max(), m)
    )
    width = max(5.0, 0.75 * len(methods) + 2.5)
    height = max(2.2, 0.42 * len(models) + 1.6)
    figure, axes = plt.subplots(
        len(datasets), 1, figsize=(width, height * len(datasets)), squeeze=False, constrained_layout=True
    )
    for axis, dataset in zip(axes[:, 0], datasets, strict=True):
        grid = trained[trained["dataset"] == dataset].pivot_table(index="model", columns="method", values=top)
        grid = grid.reindex(index=[m for m in models if m in grid.index], columns=methods)
        image = axis.imshow(grid.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for (row, column), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if not np.isnan(value):
                colour = "black" if value > 0.6 else "white"
                axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
        axis.set_xticks(range(len(methods)), methods, rotation=35, ha="right", fontsize=9)
        axis.set_yticks(range(len(grid.index)), grid.index, fontsize=9)
        axis.set_title(f"{dataset}: {top.upper()} (blank: not run)", fontsize=11)
    figure.colorbar(image, ax=axes[:, 0].tolist(), label=f"{top.upper()} (share of test set)", shrink=0.8)
    figure.suptitle("RQ1: exact match by fine-tuning method and model")
    figure.savefig(figure_path, bbox_inches="tight")
    plt.close(figure)


# --- RQ2 -----------------------------------------------------------------------------------------------
def _icl_summary(icl: pd.DataFrame, top: str) -> pd.DataFrame:
    return (
        icl.groupby(["dataset", "model", "prompt", "shots"])
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


def rq2(table: pd.DataFrame, figure_path: Path) -> list[str]:
    prompted = table[table["kind"].isin(["icl", "rag"])]
    if prompted.empty:
        _no_cells_figure(figure_path, "No in-context learning or retrieval-augmented cells in this study")
        return ["No in-context learning or retrieval-augmented cells in this study."]
    top = em_columns(table)[-1]
    icl, rag = prompted[prompted["kind"] == "icl"], prompted[prompted["kind"] == "rag"]
    peft = table[table["kind"].isin(PEFT_KINDS)]
    summary = _icl_summary(icl.astype({"shots": int, "seed": int}), top)
    lines = []
    if not icl.empty:
        lines += ["In-context learning with random examples, mean and standard deviation over seeds:", ""]
        lines += [_markdown(summary.rename(columns={"mean": f"{top} mean", "std": f"{top} std"})), ""]
    if not rag.empty:
        lines += [
            "Retrieval-augmented prompts (the most similar training examples, by BM25 or by the cosine "
            "similarity of a dense encoder's embeddings):",
            "",
        ]
        columns = ["dataset", "retriever", "shots", top, "codebleu", *pass_columns(rag)]
        lines += [_results_table(rag.astype({"shots": int}), columns, top), ""]
    for dataset in sorted(prompted["dataset"].unique()):
        for model in sorted(prompted.loc[prompted["dataset"] == dataset, "model"].unique()):
            tuned = peft[(peft["dataset"] == dataset) & (peft["model"] == model)]
            if tuned.empty:
                continue
            winner = tuned.loc[tuned[top].idxmax()]
            lines += [f"### {dataset}, {model}", ""]
            for name, cells, claim in (("ICL", icl, PAPER["rq2"]), ("RAG", rag, PAPER["rq2_rag"])):
                cells = cells[(cells["dataset"] == dataset) & (cells["model"] == model)]
                if not cells.empty:
                    best = cells.loc[cells[top].idxmax()]
                    lines += _comparison(f"Best PEFT vs best {name} cell", winner, best, top, claim)
    _prompting_dots(prompted, summary, rag, peft, top, figure_path)
    return lines


def _prompting_dots(
    prompted: pd.DataFrame,
    summary: pd.DataFrame,
    rag: pd.DataFrame,
    peft: pd.DataFrame,
    top: str,
    figure_path: Path,
) -> None:
    """One panel per test set, one row per model: ICL by number of shots (mean and std over seeds), RAG and
    the model's best PEFT cell as markers on a shared scale, so the legend stays short however many models
    the study has."""
    datasets = sorted(prompted["dataset"].unique())
    models = sorted(prompted["model"].unique())
    shots = sorted(summary["shots"].unique())
    shades = dict(
        zip(shots, plt.get_cmap("Blues")(np.linspace(0.35, 0.95, max(len(shots), 1))), strict=False)
    )
    figure, axes = plt.subplots(
        1,
        len(datasets),
        figsize=(4.6 * len(datasets) + 1.5, max(2.6, 0.38 * len(models) + 1.6)),
        squeeze=False,
        sharey=True,
        constrained_layout=True,
    )
    offsets = np.linspace(-0.25, 0.25, len(shots) + 2)
    for axis, dataset in zip(axes[0], datasets, strict=True):
        for y, model in enumerate(models):
            for offset, count in zip(offsets, shots, strict=False):
                cell = summary[(summary["dataset"] == dataset) & (summary["model"] == model)]
                cell = cell[cell["shots"] == count]
                if not cell.empty:
                    axis.errorbar(
                        cell["mean"], [y + offset], xerr=cell["std"], fmt="o", color=shades[count], capsize=2,
                        label=f"ICL, {count} shot{'s' if count != 1 else ''} (mean ± std over seeds)",
                    )  # fmt: skip
            retrieved = rag[(rag["dataset"] == dataset) & (rag["model"] == model)]
            for _, cell in retrieved.iterrows():
                axis.plot(
                    cell[top], y + offsets[-2], "s", color="tab:orange",
                    label=f"RAG ({cell['retriever']}, {int(cell['shots'])} shots)",
                )  # fmt: skip
            tuned = peft[(peft["dataset"] == dataset) & (peft["model"] == model)]
            if not tuned.empty:
                axis.plot(
                    tuned[top].max(), y + offsets[-1], "*", color="black", markersize=10, label="best PEFT"
                )
        axis.set_yticks(range(len(models)), models, fontsize=9)
        axis.set_ylim(len(models) - 0.5, -0.5)
        axis.set_xlim(-0.02, 1.02)
        axis.set_xlabel(f"{top.upper()} (share of test set)")
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


# --- RQ3 -----------------------------------------------------------------------------------------------
def rq3(table: pd.DataFrame, figure_path: Path) -> list[str]:
    joint = table[table["joint"]]
    table = table[~table["transfer"]]
    if joint.empty:
        _no_cells_figure(figure_path, "No jointly trained cells in this study")
        return ["No jointly trained cells in this study: RQ3 is not answered by this run."]
    top = em_columns(table)[-1]
    pairs = joint[["model", "method_group", "dataset"]].drop_duplicates()
    compared = table.merge(pairs, on=["model", "method_group", "dataset"])
    compared["training"] = compared["train_dataset"].fillna("per-dataset")
    lines = [
        "Each adapter on each test set; a joint adapter was trained once on the union of the datasets:",
        "",
        _results_table(compared, ["dataset", "training", top, "codebleu"], top),
        "",
        *claim_lines(PAPER["rq3"]),
        "",
    ]
    for (model, dataset, group), rows in compared.groupby(["model", "dataset", "method_group"]):
        alone = rows[rows["training"] == "per-dataset"]
        for _, together in rows[rows["training"] != "per-dataset"].iterrows():
            if alone.empty:
                lines.append(f"- {model} on {dataset}: no per-dataset {group} cell to compare with.")
                continue
            alone_row = alone.iloc[0]
            p_value = _mcnemar_em1(together, alone_row)
            verdict = "agrees" if p_value >= 0.05 else "disagrees: the difference is significant"
            lines.append(
                f"- {model} on {dataset}: {together['method']} (trained on {together['train_dataset']}) "
                f"{top} {_with_ci(together, top)} against {_with_ci(alone_row, top)} for {group} trained on "
                f"{dataset} alone, {_gain_text(relative_gain(together[top], alone_row[top]))} relative; "
                f"exact McNemar test on EM@1: p = {p_value:.3g}. Ours {verdict}."
            )
    compared["cell"] = compared["model"] + "\non " + compared["dataset"]
    bars = compared.pivot_table(index="cell", columns="training", values=top)
    figure, axis = plt.subplots(figsize=(min(14.0, max(6.5, 1.4 * len(bars) + 2)), 4))
    bars.plot.bar(ax=axis, rot=0 if len(bars) <= 6 else 30, fontsize=9)
    axis.set_xlabel("model, test set")
    axis.set_ylabel(f"{top.upper()} (share of test set)")
    axis.set_title("RQ3: joint vs per-dataset adapters")
    axis.legend(title="trained on", fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.savefig(figure_path, bbox_inches="tight")
    plt.close(figure)
    return lines


# --- RQ4 -----------------------------------------------------------------------------------------------
MEMORY_COLUMNS = ["weights", "optimizer", "checkpointing", "weight_mb", "peak_mb", "own_mb", "estimated_mb"]
# The bars of Figure 1, in the study's order; other trained kinds are left out of it.
FIGURE1_KINDS = ("full-ft", "lora", "qlora-8bit", "qlora-4bit")


def _memory_comparisons(trained: pd.DataFrame, top: str) -> list[str]:
    """QLoRA against LoRA on the same model and test set: the ratio of peak memories and the change in
    effectiveness, each beside the paper's claim."""
    lines = []
    trained = trained[trained["train_dataset"].isna()]  # joint or transferred adapters saw other data
    for (model, dataset), rows in trained.groupby(["model", "dataset"]):
        lora = rows[rows["kind"] == "lora"]
        if lora.empty:
            continue
        lora = lora.iloc[0]
        four_bit = rows.loc[rows["kind"] == "qlora-4bit", "finetune_peak_mb"]
        for _, qlora in rows[rows["kind"].str.startswith("qlora")].iterrows():
            peak = qlora["finetune_peak_mb"]
            ratio = peak / lora["finetune_peak_mb"]
            if qlora["kind"] == "qlora-4bit":
                low, high = PAPER["rq4"]["memory_ratio"]
                ours = "agrees" if low <= ratio <= high else ("saves less" if ratio > high else "saves more")
                verdict = f"the paper: {low}-{high}x; ours {ours}"
            elif four_bit.empty:
                verdict = "no 4-bit cell to set it against"
            else:
                between = four_bit.iloc[0] <= peak <= lora["finetune_peak_mb"]
                verdict = f"{'' if between else 'not '}between LoRA and QLoRA-4bit"
            lines.append(
                f"- {model} on {dataset}: {qlora['method']} peaks at {peak:.0f} MB, {ratio:.2f}x "
                f"{lora['method']}'s {lora['finetune_peak_mb']:.0f} MB ({verdict}); {top} "
                f"{_with_ci(qlora, top)} against {_with_ci(lora, top)}, exact McNemar test on EM@1: "
                f"p = {_mcnemar_em1(qlora, lora):.3g}."
            )
            if bool(qlora["gradient_checkpointing"]) != bool(lora["gradient_checkpointing"]):
                lines.append(
                    "  Gradient checkpointing is on for one and off for the other (QLoRA turns it on, as in "
                    "its recipe), so part of the difference is recomputed activations, not quantization."
                )
    return lines


def rq4(table: pd.DataFrame, figure_path: Path) -> list[str]:
    trained = table[table["kind"].isin(TRAINED_KINDS)]
    if trained.empty:
        _no_cells_figure(figure_path, "No fine-tuned cells in this study")
        return ["No fine-tuned cells in this study."]
    top = em_columns(trained)[-1]
    lines = [
        "Each fine-tuning job's peak memory (MB; CUDA: peak allocated, CPU: peak resident set of the job's "
        "process), its own part of it (CUDA: peak reserved; CPU: less what the process held before "
        "loading anything, its libraries), the memory plan's estimate of that part, its weight footprint "
        "(MB) and the optimizer it ran with, against its effectiveness:",
        "",
    ]
    quantized = trained["quantization_bits"]
    estimates = trained.get("estimated_peak_mb", pd.Series(index=trained.index, dtype=float))
    memory = trained.assign(
        weights=[
            f"{bits:.0f}-bit" if pd.notna(bits) else precision
            for bits, precision in zip(quantized, trained["finetune_precision"], strict=True)
        ],
        checkpointing=trained["gradient_checkpointing"].map({True: "yes", False: "no"}),
        weight_mb=trained["finetune_weight_mb"].round().astype("Int64"),
        peak_mb=trained["finetune_peak_mb"].round().astype("Int64"),
        own_mb=trained["finetune_own_peak_mb"].round().astype("Int64"),
        estimated_mb=estimates.round().astype("Int64"),
    )
    for dataset, rows in memory.groupby("dataset"):
        lines += [f"## {dataset}", "", _results_table(rows, [*MEMORY_COLUMNS, top, "codebleu"], top), ""]
    comparisons = _memory_comparisons(trained, top)
    if comparisons:
        lines += ["## QLoRA against LoRA", "", *claim_lines(PAPER["rq4"]), "", *comparisons]
    else:
        lines += [*claim_lines(PAPER["rq4"]), "This run has no QLoRA and LoRA cells to compare."]
    lines += ["", "![Figure 1: peak fine-tuning memory by method](figure1_memory.png)"]
    _memory_scatter(trained, top, figure_path)
    return lines


def _memory_scatter(trained: pd.DataFrame, top: str, figure_path: Path) -> None:
    """Peak memory against effectiveness: a marker per method, a colour per model, one legend for each
    (12 models and 9 methods make 21 entries, not 108), memory on a log scale across model sizes."""
    trained = trained[trained["finetune_peak_mb"].notna()]
    methods = sorted(trained["method_group"].unique())
    models = sorted(
        trained["model"].unique(), key=lambda m: (trained.loc[trained["model"] == m, "size_b"].max(), m)
    )
    colours = dict(zip(models, plt.get_cmap("tab20" if len(models) > 10 else "tab10").colors, strict=False))
    markers = dict(zip(methods, "osD^v<>ph*XP8", strict=False))
    figure, axis = plt.subplots(figsize=(8, 4.8), constrained_layout=True)
    for (model, method), rows in trained.groupby(["model", "method_group"]):
        axis.errorbar(
            rows["finetune_peak_mb"], rows[top], yerr=_error_bars(rows, top), fmt=markers[method],
            color=colours[model], capsize=2, markersize=6, alpha=0.85, linestyle="none",
        )  # fmt: skip
    if trained["finetune_peak_mb"].max() > 10 * trained["finetune_peak_mb"].min():
        axis.set_xscale("log")
    axis.set_xlabel("peak memory of the fine-tuning job (MB)")
    axis.set_ylabel(f"{top.upper()} (share of test set; 95% CI)")
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


def figure1(table: pd.DataFrame, figure_path: Path) -> None:
    """The study's Figure 1: peak fine-tuning memory of full fine-tuning, LoRA and QLoRA per model (the
    largest over the datasets every one of them ran on), the weight footprint hatched inside each bar."""
    rows = table[table["kind"].isin(FIGURE1_KINDS)] if "kind" in table.columns else table
    if rows.empty:
        _no_cells_figure(figure_path, "No full fine-tuning, LoRA or QLoRA cells in this study")
        return
    rows = rows[rows["train_dataset"].isna()]  # a joint or transferred adapter trained on other data
    # Peaks grow with sequence length: compare each model's methods on the datasets all of them ran on.
    kinds_run = rows.groupby(["model", "dataset"])["kind"].agg(frozenset)
    every_kind = rows.groupby("model")["kind"].agg(frozenset)
    shared = [every_kind[model] == kinds for (model, _), kinds in kinds_run.items()]
    if any(shared):
        keep = kinds_run[shared].index
        rows = rows[pd.MultiIndex.from_frame(rows[["model", "dataset"]]).isin(keep)]
    peaks = rows.groupby(["model", "kind"])[["finetune_peak_mb", "finetune_weight_mb"]].max()
    models = sorted(peaks.index.get_level_values("model").unique())
    kinds = [k for k in FIGURE1_KINDS if k in set(peaks.index.get_level_values("kind"))]
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {kind: palette[i] for i, kind in enumerate(kinds)}
    width = 0.8 / peaks.groupby("model").size().max()
    # An inch or so a model, however many: the paper's 12 models stay on one page.
    figure, axis = plt.subplots(figsize=(min(14.0, max(6.0, 1.1 * len(models) + 2)), 4.5))
    labelled = len(models) * len(kinds) <= 16  # values over the bars only where they fit
    for index, model in enumerate(models):
        # Each model's bars centred on its tick, however many of the methods it ran.
        of_model = peaks.loc[model].reindex([k for k in kinds if k in peaks.loc[model].index])
        for offset, (kind, bar) in enumerate(of_model.iterrows()):
            position = index + (offset - (len(of_model) - 1) / 2) * width
            drawn = axis.bar(position, bar["finetune_peak_mb"], width, color=colours[kind])
            axis.bar(
                position, bar["finetune_weight_mb"], width, fill=False, hatch="//", edgecolor="black", lw=0
            )
            if labelled:
                axis.bar_label(drawn, fmt="%.0f", fontsize=8)
    handles = [Patch(color=colours[kind], label=kind) for kind in kinds]
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


QUESTIONS = {
    "rq1": ("RQ1: PEFT-tuned LLMs vs fully fine-tuned models", rq1),
    "rq2": ("RQ2: PEFT vs in-context learning and retrieval-augmented prompts", rq2),
    "rq3": ("RQ3: one LoRA adapter trained jointly vs one per dataset", rq3),
    "rq4": ("RQ4: memory against effectiveness", rq4),
}


def not_fitting(plan: pd.DataFrame | None) -> list[str]:
    """The cells the memory plan left out of the study (``over_budget: skip``)."""
    if plan is None or plan["fits"].all():
        return []
    out = plan[~plan["fits"]]
    lines = [
        f"**{len(out)} cells do not fit in {out['budget_gb'].iloc[0]:g} GB per GPU and were left out:**",
        "",
    ]
    for _, row in out.iterrows():
        peak = max(row["finetune_peak_mb"] if pd.notna(row["finetune_peak_mb"]) else 0, row["infer_peak_mb"])
        lines.append(f"- {row['model']} / {row['method']} / {row['dataset']}: about {peak / 1024:.1f} GB")
    return [*lines, ""]


def unsafe_execution_warning(table: pd.DataFrame) -> list[str]:
    """Cells whose pass@k ran model-written programs without kernel isolation, which the config allowed."""
    if "sandbox" not in table.columns:
        return []
    unsafe = table[table["sandbox"].fillna("").str.startswith("UNSAFE")]
    if unsafe.empty:
        return []
    cells = ", ".join(f"{r['model']} / {r['method']} / {r['dataset']}" for _, r in unsafe.iterrows())
    return [
        f"**UNSAFE: the pass@k of {len(unsafe)} cells ran model-written programs without kernel isolation "
        f"(evaluation.execution.unsafe_without_isolation): {cells}.**",
        "",
    ]


def missing_cells(table: pd.DataFrame, expected: list[dict] | None) -> list[str]:
    if not expected:
        return []
    present = set(map(tuple, table[CELL_COLUMNS].itertuples(index=False))) if len(table) else set()
    return [
        f"{c['model']} / {c['method']} / {c['dataset']}"
        for c in expected
        if (c["model"], c["method"], c["dataset"]) not in present
    ]


def write_reports(
    table: pd.DataFrame | str | Path,
    out_dir: str | Path,
    expected: list[dict] | None = None,
    plan: pd.DataFrame | str | Path | None = None,
):
    """Write ``rq1.md`` .. ``rq4.md`` and ``rq1.png`` .. ``rq4.png`` under ``out_dir``; ``expected`` cells
    that the table lacks are listed at the top of every report, and so are the cells the memory ``plan``
    (plan.csv) left out as not fitting; RQ4 sets the plan's estimates beside the measured peaks."""
    if not isinstance(table, pd.DataFrame):
        table = pd.read_parquet(table)
    if plan is not None and not isinstance(plan, pd.DataFrame):
        plan = pd.read_csv(plan)
    if plan is not None and len(table):
        estimates = plan[CELL_COLUMNS + ["finetune_peak_mb"]].rename(
            columns={"finetune_peak_mb": "estimated_peak_mb"}
        )
        table = table.merge(estimates, on=CELL_COLUMNS, how="left")
    if len(table):
        if "train_dataset" not in table.columns:
            table["train_dataset"] = None
        if "joint" not in table.columns:  # a results table written before test_on cells existed
            table["joint"] = table["train_dataset"].notna()
        table["joint"] = table["joint"].fillna(False).astype(bool)
        table["transfer"] = table["train_dataset"].notna() & ~table["joint"]
        for column, default in (("prompt", "alpaca"), ("retriever", "bm25")):  # tables of earlier versions
            if column not in table.columns:
                table[column] = default
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
    preface += unsafe_execution_warning(table) + not_fitting(plan)
    figure1(table, out_dir / "figure1_memory.png")
    for name, (title, build) in QUESTIONS.items():
        figure = out_dir / f"{name}.png"
        body = build(table, figure) if len(table) else _empty(figure)
        page = [f"# {title}", "", *preface, *body, ""]
        (out_dir / f"{name}.md").write_text("\n".join([*page, f"![{name}]({name}.png)", ""]))
        (out_dir / f"{name}.html").write_text(html_page(title, page, figure))


PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f2f2f2; }
td { font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
"""


def html_page(title: str, lines: list[str], figure: Path) -> str:
    """A report's markdown as a standalone HTML page, its figure embedded (a page viewed inside Snakemake's
    report cannot reach files beside it)."""
    image = base64.b64encode(figure.read_bytes()).decode()
    body = markdown.markdown("\n".join(lines), extensions=["tables"])
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{PAGE_STYLE}</style></head><body>\n{body}\n"
        f"<img alt='{figure.stem} figure' src='data:image/png;base64,{image}'>\n</body></html>\n"
    )


def _empty(figure: Path) -> list[str]:
    _no_cells_figure(figure, "No finished cells yet")
    return ["No finished cells yet."]
