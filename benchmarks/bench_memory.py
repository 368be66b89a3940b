"""Peak memory of LoRA against QLoRA-8bit and QLoRA-4bit fine-tuning of SmolLM2-135M (RQ4, Figure 1).

Each variant is the embedded default's `conala-style` cell with the study's own settings (from
config.yaml), fine-tuned in a fresh process so that its peak resident memory is its own; the table shows
gradient checkpointing on and off, since QLoRA runs with it by default and part of its saving is that.
QLoRA's base model is quantized first by a job of its own, as in the workflow; its peak is shown apart.

Usage: python benchmarks/bench_memory.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import yaml

from peftcode.data.prepare_data import prepare_data
from peftcode.models.prepare_model import prepare_model
from peftcode.study.config import Study
from peftcode.study.settings import TrainSettings
from peftcode.study.validation import validate_config

REPO = Path(__file__).resolve().parents[1]
MODEL, DATASET = "smollm2-135m", "conala-style"
# (label, method in config.yaml, gradient checkpointing)
VARIANTS = [
    ("LoRA", "lora", False),
    ("LoRA + checkpointing", "lora", True),
    ("QLoRA-8bit + checkpointing", "qlora-8bit", True),
    ("QLoRA-4bit", "qlora-4bit", False),
    ("QLoRA-4bit + checkpointing", "qlora-4bit", True),
]
QUANTIZE = """
import json, sys
from peftcode.models.quantize_model import quantize_model
model, out, quantization = sys.argv[1:]
quantize_model(model, out, "causal", json.loads(quantization))
"""
FINETUNE = """
import pickle, sys
from peftcode.training.finetune import finetune
model, data, out, settings, threads = sys.argv[1:]
settings = pickle.loads(bytes.fromhex(settings))
finetune(model, data, out + "/checkpoint", out + "/log.csv", out + "/cost.json", settings,
         threads=int(threads))
"""


def run(script: str, *args) -> None:
    """One job in a fresh process, as Snakemake runs it."""
    command = [sys.executable, "-c", script, *map(str, args)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(
    model_dir: Path, data_dir: Path, out: Path, settings: TrainSettings, threads: int
) -> tuple[dict, dict]:
    """The fine-tune's cost record, and the quantize job's (empty without quantization)."""
    quantized = {}
    if settings.quantization:
        run(QUANTIZE, model_dir, out / "base", json.dumps(settings.quantization))
        quantized = json.loads((out / "base" / "cost.json").read_text())
        model_dir = out / "base"
    run(FINETUNE, model_dir, data_dir, out, pickle.dumps(settings).hex(), threads)
    return json.loads((out / "cost.json").read_text()), quantized


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    study = Study(validate_config(yaml.safe_load((REPO / "config.yaml").read_text())))
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_dir, data_dir = scratch / "model", scratch / "data"
        prepare_model(study.model_settings(MODEL), model_dir)
        prepare_data(study.data_settings(DATASET), data_dir)
        rows = []
        for label, method, checkpointing in VARIANTS:
            settings = replace(
                study.train_settings(MODEL, method, DATASET), gradient_checkpointing=checkpointing
            )
            out = scratch / label.replace(" ", "")
            out.mkdir()
            rows.append((label, *measure(model_dir, data_dir, out, settings, args.threads)))
    lora_peak = rows[0][1]["peak_rss_mb"]
    lora_gc_peak = rows[1][1]["peak_rss_mb"]
    print(
        "| variant | weights (MiB) | fine-tune peak RSS (MiB) | vs LoRA | vs LoRA + ckpt | tokens/s "
        "| val loss | quantize job peak RSS (MiB) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, record, quantized in rows:
        peak = record["peak_rss_mb"]
        print(
            f"| {label} | {record['weight_footprint_mb']:.0f} | {peak:.0f} | {peak / lora_peak:.2f}x"
            f" | {peak / lora_gc_peak:.2f}x | {record['train_tokens'] / record['train_time_s']:.0f}"
            f" | {record['best_val_loss']:.3f} | {quantized.get('peak_rss_mb', '-')} |"
        )


if __name__ == "__main__":
    main()
