"""The paper grid's cells that benchmarks/gpu_check.py measures: CodeLlama-7B's fine-tunes on CodeAlpaca-py
(the paper's longer targets, so its larger activations) and the 10-beam inference of its LoRA cell, with
their settings as the study resolves them and the memory plan's row of each at the paper's 24 GB budget.

The GPU machine has no Snakemake, which peftcode.study.config validates configs with, so the cells travel as
gpu_check_cells.json; tests/workflow/test_gpu_check.py checks that file against this module's output.

Usage: python benchmarks/gpu_check_cells.py  (rewrites gpu_check_cells.json)
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CELLS = Path(__file__).with_name("gpu_check_cells.json")
MODEL, DATASET = "codellama-7b", "codealpacapy"
METHODS = ("lora", "ia3", "prompt-tuning", "prefix-tuning", "qlora-8bit", "qlora-4bit")
INFERENCE_METHOD = "lora"


def paper_cells() -> dict:
    """The cells' settings and plan rows, from studies/paper.yaml and the model's shape (no network: the
    plan reads the config the package ships, src/peftcode/models/model_configs)."""
    from peftcode.planning import plan as planner
    from peftcode.study.config import Study
    from peftcode.study.validation import validate_config

    paper = yaml.safe_load((REPO / "studies" / "paper.yaml").read_text())
    # The other models' shapes are not needed: each cell's row depends on its own model and settings.
    paper["study"] = [{"models": [MODEL], "methods": list(METHODS), "datasets": [DATASET]}]
    study = Study(validate_config(paper))
    plan = planner.Plan(study)
    rows = {row["variant"]: row for row in plan.rows if row["dataset"] == DATASET}

    def plan_row(method: str) -> dict:
        keys = ("precision", "generation_batch", "infer_peak_mb", "finetune_peak_mb", "fits")
        return {key: rows[method][key] for key in keys}

    inference = study.configured_infer_settings(MODEL, INFERENCE_METHOD, DATASET)
    return {
        "model": MODEL,
        "dataset": DATASET,
        "budget_gb": plan.memory_gb,
        "finetunes": {
            method: {"settings": study.train_settings(MODEL, method, DATASET), "plan": plan_row(method)}
            for method in METHODS
        },
        "inference": {
            "variant": INFERENCE_METHOD,
            # The batch of prompts the plan gives the job (halved where the configured one would not fit).
            "settings": replace(inference, batch_size=rows[INFERENCE_METHOD]["generation_batch"]),
            "plan": plan_row(INFERENCE_METHOD),
        },
    }


def read_cells() -> dict:
    """The cells as :func:`paper_cells` gives them, from the file the GPU check carries."""
    from peftcode.study.settings import InferSettings, TrainSettings

    cells = json.loads(CELLS.read_text())
    for cell in cells["finetunes"].values():
        cell["settings"] = TrainSettings.from_dict(cell["settings"])
    cells["inference"]["settings"] = InferSettings(**cells["inference"]["settings"])
    return cells


def as_data(cells: dict) -> dict:
    """The cells with their settings as plain data, to write."""
    finetunes = {m: {**c, "settings": c["settings"].as_dict()} for m, c in cells["finetunes"].items()}
    inference = {**cells["inference"], "settings": cells["inference"]["settings"].as_dict()}
    return {**cells, "finetunes": finetunes, "inference": inference}


if __name__ == "__main__":
    CELLS.write_text(json.dumps(as_data(paper_cells()), indent=1) + "\n")
    print(f"wrote {CELLS}")
