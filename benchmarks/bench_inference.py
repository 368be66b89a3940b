"""Beam search (10 beams, 10 returned, at most 64 new tokens) over 64 CoNaLa-style prompts on
SmolLM2-135M: the study's generation (32 prompts a batch, each prompt computed once for its beams, finished
examples dropped from the batch, stopping on the newest token; peftcode.inference.beam_search) against the
original loop (one `generate` call per example, a stopping criterion that decodes the
whole batch at every step). Prints examples per second, the ratio, and how many examples got identical
top-10 candidates.

Usage: python benchmarks/bench_inference.py [--prompts 64] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from transformers import StoppingCriteria, StoppingCriteriaList

from peftcode.data.prepare_data import prepare_data
from peftcode.data.prompts import causal_prompt, prompt_ids
from peftcode.data.splits import read_split
from peftcode.inference.decoding import generate_candidates
from peftcode.inference.infer import load_for_inference
from peftcode.inference.stops import cut_at_stop
from peftcode.models.prepare_model import prepare_model
from peftcode.study.config import Study
from peftcode.study.settings import InferSettings
from peftcode.study.validation import validate_config

REPO = Path(__file__).resolve().parents[1]
MODEL, DATASET = "smollm2-135m", "conala-style"


class DecodesWholeBatch(StoppingCriteria):
    """The baseline's criterion: decode every sequence at every step, done once the stop string shows."""

    def __init__(self, tokenizer, stop: str, prompt_length: int):
        self.tokenizer, self.stop, self.prompt_length = tokenizer, stop, prompt_length

    def __call__(self, input_ids, scores, **kwargs):
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        return torch.tensor([self.stop in text for text in texts], device=input_ids.device)


@torch.no_grad()
def per_example(model, tokenizer, prompts: list[str], settings: InferSettings) -> list[list[str]]:
    candidates = []
    for prompt in prompts:
        ids = torch.tensor([prompt_ids(tokenizer, prompt, settings.max_input_length)])
        output = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            num_beams=settings.num_beams,
            num_return_sequences=settings.num_return_sequences,
            max_new_tokens=settings.max_new_tokens,
            do_sample=False,
            early_stopping=settings.early_stopping,
            stopping_criteria=StoppingCriteriaList(
                [DecodesWholeBatch(tokenizer, settings.stop, ids.shape[1])]
            ),
            pad_token_id=tokenizer.pad_token_id,
        )
        texts = tokenizer.batch_decode(output[:, ids.shape[1] :], skip_special_tokens=True)
        candidates.append([cut_at_stop(text, settings.stop) for text in texts])
    return candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    study = Study(validate_config(yaml.safe_load((REPO / "config.yaml").read_text())))
    settings = replace(study.configured_infer_settings(MODEL, "icl-0shot", DATASET), max_new_tokens=64)
    with tempfile.TemporaryDirectory() as scratch:
        prepare_model(study.model_settings(MODEL), Path(scratch) / "model")
        data = replace(study.data_settings(DATASET), limit={})
        prepare_data(data, Path(scratch) / "data")
        intents = list(read_split(Path(scratch) / "data", "train")["intent"][: args.prompts])
        model, tokenizer = load_for_inference(Path(scratch) / "model", None, "causal")
    prompts = [causal_prompt(intent) for intent in intents]
    timings = {"baseline": [], "ours": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        baseline = per_example(model, tokenizer, prompts, settings)
        timings["baseline"].append(time.perf_counter() - started)
        started = time.perf_counter()
        ours = generate_candidates(model, tokenizer, prompts, settings)
        timings["ours"].append(time.perf_counter() - started)
    rates = {name: len(prompts) / statistics.median(times) for name, times in timings.items()}
    identical = sum(a == b for a, b in zip(baseline, ours, strict=True))
    print(
        f"| prompts | baseline (ex/s) | ours (ex/s) | ratio (median of {args.repeats}) | identical top-10 |"
    )
    print("| --- | --- | --- | --- | --- |")
    print(
        f"| {len(prompts)} | {rates['baseline']:.2f} | {rates['ours']:.2f} | "
        f"{rates['ours'] / rates['baseline']:.2f}x | {identical} of {len(prompts)} |"
    )


if __name__ == "__main__":
    main()
