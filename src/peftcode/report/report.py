"""RQ1-RQ4 reports: markdown tables and one PNG figure per research question, the study's Figure 1 (peak
fine-tuning memory by method) and each fine-tune's loss curves, from the results table alone; each report
also as one HTML page with its figure inside, for Snakemake's HTML report (which shows HTML and images, and
offers markdown only as a download).

Every number carries its 95% bootstrap interval and is on its test set's primary metric; each of the
study's claims is tested on paired outcomes and given a standing (:mod:`peftcode.report.claims`). A
question whose cells are not in the table says so, and cells the study expects but has not finished are
listed, so a partial study still reports. One module per question: ``rq1`` .. ``rq4``.
"""

from __future__ import annotations

import base64
from pathlib import Path

import markdown
import pandas as pd

from peftcode.report import rq1, rq2, rq3, rq4
from peftcode.report.claims import render
from peftcode.report.figure1 import figure1
from peftcode.report.losses import loss_figure
from peftcode.report.tables import CELL_COLUMNS, no_cells_figure

QUESTIONS = {
    "rq1": (rq1.TITLE, rq1.rq1),
    "rq2": (rq2.TITLE, rq2.rq2),
    "rq3": (rq3.TITLE, rq3.rq3),
    "rq4": (rq4.TITLE, rq4.rq4),
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
        finetune = row["finetune_per_gpu_mb"] if pd.notna(row["finetune_per_gpu_mb"]) else 0
        peak = max(finetune, row["infer_per_gpu_mb"])
        cell = f"{row['model']} / {row['variant']} / {row['dataset']}"
        lines.append(f"- {cell}: about {peak / 1024:.1f} GB a GPU")
    return [*lines, ""]


def unsafe_execution_warning(table: pd.DataFrame) -> list[str]:
    """Cells whose pass@k ran model-written programs without kernel isolation, which the config allowed."""
    if "sandbox" not in table.columns:
        return []
    unsafe = table[table["sandbox"].fillna("").str.startswith("UNSAFE")]
    if unsafe.empty:
        return []
    cells = ", ".join(f"{r['model']} / {r['variant']} / {r['dataset']}" for _, r in unsafe.iterrows())
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
        f"{c['model']} / {c['variant']} / {c['dataset']}"
        for c in expected
        if (c["model"], c["variant"], c["dataset"]) not in present
    ]


def with_plan(table: pd.DataFrame, plan: pd.DataFrame | None) -> pd.DataFrame:
    """The table with the plan's estimate of each fine-tune's peak and each cell's GPU-hours."""
    if plan is None or not len(table):
        return table
    columns = {"finetune_peak_mb": "estimated_peak_mb", "gpu_hours": "planned_gpu_hours"}
    estimates = plan[CELL_COLUMNS + [c for c in columns if c in plan.columns]].rename(columns=columns)
    return table.merge(estimates, on=CELL_COLUMNS, how="left")


def write_reports(
    table: pd.DataFrame | str | Path,
    out_dir: str | Path,
    expected: list[dict] | None = None,
    plan: pd.DataFrame | str | Path | None = None,
    fine_tunes: list[dict] | None = None,
):
    """Write ``rq1.md`` .. ``rq4.md`` (and ``.html``), ``rq1.png`` .. ``rq4.png``, ``figure1_memory.png``
    and ``losses.png`` (from ``fine_tunes``, see :func:`loss_figure`) under ``out_dir``; ``expected`` cells
    that the table lacks are listed at the top of every report, and so are the cells the memory ``plan``
    (plan.csv) left out as not fitting; RQ4 sets the plan's estimates beside the measured peaks."""
    if not isinstance(table, pd.DataFrame):
        table = pd.read_parquet(table)
    if plan is not None and not isinstance(plan, pd.DataFrame):
        plan = pd.read_csv(plan)
    table = with_plan(table, plan)
    if len(table):
        table["joint"] = table["joint"].fillna(False).astype(bool)
        table["transfer"] = table["train_dataset"].notna() & ~table["joint"]
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
    loss_figure(fine_tunes or [], out_dir / "losses.png")
    for name, (title, build) in QUESTIONS.items():
        figure = out_dir / f"{name}.png"
        body = render(build(table, figure)) if len(table) else empty(figure)
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


def empty(figure: Path) -> list[str]:
    no_cells_figure(figure, "No finished cells yet")
    return ["No finished cells yet."]
