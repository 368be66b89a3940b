"""The reports' figures at the paper grid's scale (12 models, 9 methods, 3 datasets) and at the default
study's, from synthetic results tables: every figure is written, legible in size, and not crowded."""

import random

import matplotlib.image
import pandas as pd

from peftcode.report.report import write_reports
from tests.helpers import row

PAPER_MODELS = {
    "codet5p-220m": 0.22, "codegen-350m-mono": 0.35, "codet5p-770m": 0.77, "codegen2-1b": 1.0,
    "codegen2-3.7b": 3.7, "codegen2-7b": 7.0, "codellama-7b": 7.0, "codellama-7b-python": 7.0,
    "codellama-7b-instruct": 7.0, "codellama-13b": 13.0, "codellama-13b-python": 13.0, "codellama-34b": 34.0,
}  # fmt: skip
PAPER_METHODS = ["full-ft", "lora", "ia3", "prompt-tuning", "prefix-tuning", "qlora-8bit", "qlora-4bit"]


def hit_ranks(rng: random.Random) -> list[int]:
    hits = rng.randint(0, 20)
    return [0] * hits + [-1] * (20 - hits)


def paper_sized_table() -> pd.DataFrame:
    rng = random.Random(0)
    rows = []
    for dataset in ("conala", "codealpacapy", "apps"):
        for model, size in PAPER_MODELS.items():
            for method in PAPER_METHODS:
                hits = rng.randint(0, 20)
                memory = size * 2000 * (0.4 if method.startswith("qlora") else 1.0) + rng.random() * 500
                rows.append(
                    {
                        **row(method, method, [0] * hits + [-1] * (20 - hits), dataset, model, memory=memory),
                        "size_b": size,
                    }
                )
            for shots in (0, 1, 2, 3):
                hits = rng.randint(0, 10)
                rows.append(
                    {
                        **row(
                            f"icl-{shots}shot",
                            "icl",
                            [0] * hits + [-1] * (20 - hits),
                            dataset,
                            model,
                            shots=shots,
                            seed=42,
                        ),
                        "size_b": size,
                    }
                )
            rows.append(
                {
                    **row("rag-dense", "rag", hit_ranks(rng), dataset, model, 3),
                    "size_b": size,
                }
            )
            if (
                model.startswith("codellama")
                and "-" not in model.removeprefix("codellama-")
                and dataset != "apps"
            ):
                ranks = hit_ranks(rng)
                rows.append(
                    {
                        **row("lora-joint", "lora", ranks, dataset, model, joint="conala+codealpacapy"),
                        "size_b": size,
                    }
                )
    return pd.DataFrame(rows)


def test_figures_of_a_paper_sized_grid_are_legible(tmp_path):
    table = paper_sized_table()
    assert len(table) == 3 * 12 * (7 + 4 + 1) + 2 * 3
    write_reports(table, tmp_path)
    for name in ("rq1", "rq2", "rq3", "rq4", "figure1_memory"):
        height, width = matplotlib.image.imread(tmp_path / f"{name}.png").shape[:2]
        # Readable on a screen or a page at 120 dpi: no figure grows without bound with the grid.
        assert 300 < width < 2600 and 200 < height < 3200, (name, width, height)
