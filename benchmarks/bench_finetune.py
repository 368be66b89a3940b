"""One epoch of LoRA on the default CoNaLa-style training set with SmolLM2-135M: the study's loop (batches
padded to their own longest example, vocabulary logits only where a target token is predicted) against the
original one (every example padded to max input + max target length, logits at every position). Same
optimizer steps and seed; prints tokens per second (real tokens, not padding), the ratio, and the final
validation losses.

Usage: python benchmarks/bench_finetune.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from unittest import mock

import torch
import yaml

import peftcode.training.finetune
from peftcode.data.prepare_data import prepare_data
from peftcode.data.prompts import collate
from peftcode.models.prepare_model import prepare_model
from peftcode.study.config import Study
from peftcode.study.settings import TrainSettings
from peftcode.study.validation import validate_config
from peftcode.training.finetune import finetune

REPO = Path(__file__).resolve().parents[1]
MODEL, METHOD, DATASET = "smollm2-135m", "lora", "conala-style"


def padded_to_max(length: int):
    """The baseline's collate: every example right-padded to ``length`` tokens."""

    def pad(examples, pad_id, device=None):
        filler = {"input_ids": [pad_id], "labels": [-100]}
        full = [{key: e[key] + filler[key] * (length - len(e[key])) for key in filler} for e in examples]
        batch = collate(full, pad_id, device)
        real = torch.tensor([len(e["input_ids"]) for e in examples], device=batch["input_ids"].device)
        batch["attention_mask"] = (torch.arange(length, device=real.device) < real[:, None]).long()
        return batch

    return pad


def whole_sequence_loss(model, batch, family):
    """The baseline's loss: the model's own, from logits at every position."""
    return model(**batch).loss


def run(model_dir: Path, data_dir: Path, out: Path, settings: TrainSettings, threads: int) -> dict:
    out.mkdir(parents=True)
    return finetune(model_dir, data_dir, out / "ckpt", out / "log.csv", out / "cost.json", settings, threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    study = Study(validate_config(yaml.safe_load((REPO / "config.yaml").read_text())))
    settings = study.train_settings(MODEL, METHOD, DATASET)
    records = {"baseline": [], "ours": []}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        prepare_model(study.model_settings(MODEL), scratch / "model")
        prepare_data(study.data_settings(DATASET), scratch / "data")
        length = settings.max_input_length + settings.max_target_length
        for repeat in range(args.repeats):
            with (
                mock.patch.object(peftcode.training.finetune, "collate", padded_to_max(length)),
                mock.patch.object(peftcode.training.finetune, "target_loss", whole_sequence_loss),
            ):
                records["baseline"].append(
                    run(scratch / "model", scratch / "data", scratch / f"b{repeat}", settings, args.threads)
                )
            records["ours"].append(
                run(scratch / "model", scratch / "data", scratch / f"o{repeat}", settings, args.threads)
            )
    rate = {name: statistics.median(r["tokens_per_s"] for r in runs) for name, runs in records.items()}
    loss = {name: runs[0]["best_val_loss"] for name, runs in records.items()}
    steps = {name: runs[0]["steps"] for name, runs in records.items()}
    print(
        f"| steps | baseline tokens/s | ours tokens/s | ratio (median of {args.repeats}) "
        "| baseline val loss | ours val loss | difference |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {steps['ours']} (baseline {steps['baseline']}) | {rate['baseline']:.0f} | {rate['ours']:.0f} | "
        f"{rate['ours'] / rate['baseline']:.2f}x | {loss['baseline']:.4f} | {loss['ours']:.4f} | "
        f"{100 * abs(loss['ours'] - loss['baseline']) / loss['baseline']:.2f}% |"
    )


if __name__ == "__main__":
    main()
