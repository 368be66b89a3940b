"""vLLM against our decoder on the same prompts, side by side in one run (SmolLM2-135M, float32 on the CPU,
bfloat16 where ``--precision bf16`` on a GPU): draws per second for pass@k (HumanEval prompts, 10 draws at
temperature 0.8 and top-p 0.95), beams per second for EM@k (CoNaLa-style prompts, 10-beam search, its 10
candidates), greedy candidates per second, and how often vLLM's top-10 equals ours (and its top-1).

vLLM runs in its environment's worker (`make vllm`, or PEFTCODE_VLLM_PYTHON), as in a study; its start
(loading the model, its key/value cache) is timed apart from the decoding.

Usage: python benchmarks/bench_vllm.py [--prompts 16] [--samples 10] [--new-tokens 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import pandas as pd
import torch
import yaml

from peftcode.data.prepare_data import prepare_data
from peftcode.data.prompts import inference_prompts, prompt_style
from peftcode.hardware.precision import resolve as resolve_precision
from peftcode.inference.decoding import encode_prompts, generate_candidates
from peftcode.inference.infer import load_for_inference, load_for_vllm
from peftcode.inference.vllm_engine import vllm_environment
from peftcode.models.prepare_model import prepare_model
from peftcode.study.config import Study
from peftcode.study.validation import validate_config

REPO = Path(__file__).resolve().parents[1]


def timed(decode, repeats: int) -> tuple[float, list]:
    """The median seconds of ``decode()`` over ``repeats`` runs, and its last output."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        output = decode()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), output


def prompts_of(study: Study, data: Path, dataset: str, count: int, tokenizer) -> tuple[list, list, object]:
    settings = study.configured_infer_settings("smollm2-135m", "zero-shot-0shot", dataset)
    test = pd.read_parquet(data / dataset / "test.parquet").head(count)
    prompts = inference_prompts(test, None, "causal", 0, 42, None, prompt_style("alpaca", tokenizer), None)
    return prompts, list(test["prefix"]), settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--model", help="a prepared model directory (default: SmolLM2-135M from its GGUF)")
    args = parser.parse_args()
    environment = vllm_environment()
    if environment is None:
        raise SystemExit("no vLLM environment: make vllm, or set PEFTCODE_VLLM_PYTHON")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"]["humaneval"]["limit"] = {"test": args.prompts}
    config["datasets"]["conala-style"]["limit"] = {"train": 1, "validation": 1, "test": args.prompts}
    study = Study(validate_config(config))
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_dir = Path(args.model) if args.model else scratch / "model"
        if not args.model:
            prepare_model(study.model_settings("smollm2-135m"), model_dir)
        for dataset in ("humaneval", "conala-style"):
            prepare_data(study.data_settings(dataset), scratch / dataset)
        compare(args, study, model_dir, scratch, environment)


def compare(args, study: Study, model_dir: Path, scratch: Path, environment: dict) -> None:
    precision = resolve_precision(
        args.precision, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    model, tokenizer = load_for_inference(model_dir, None, "causal", precision.dtype)
    sampling = {"samples": args.samples, "temperature": 0.8, "top_p": 0.95}
    human, human_prefixes, human_settings = prompts_of(study, scratch, "humaneval", args.prompts, tokenizer)
    conala, conala_prefixes, conala_settings = prompts_of(
        study, scratch, "conala-style", args.prompts, tokenizer
    )
    human_settings = replace(human_settings, max_new_tokens=args.new_tokens, batch_size=args.prompts)
    conala_settings = replace(conala_settings, batch_size=args.prompts)
    runs = {
        "draws": (human, human_prefixes, human_settings, sampling, args.prompts * args.samples),
        "beams": (conala, conala_prefixes, conala_settings, None, args.prompts * conala_settings.num_beams),
        "greedy": (human, human_prefixes, replace(human_settings, num_beams=1, num_return_sequences=1), None,
                   args.prompts),
    }  # fmt: skip
    ours, theirs, outputs = {}, {}, {}
    for name, (prompts, prefixes, settings, drawn, count) in runs.items():
        decode = partial(generate_candidates, model, tokenizer, prompts, settings, drawn, precision, prefixes)
        seconds, output = timed(decode, args.repeats)
        ours[name], outputs[name] = count / seconds, [output]
    started = time.perf_counter()
    vllm_settings = replace(human_settings, engine="vllm")
    vllm = load_for_vllm(model_dir, None, vllm_settings, precision, environment, scratch, 1)
    longest = max(len(ids) for p, f, s, _, _ in runs.values() for ids in encode_prompts(tokenizer, p, f, s))
    vllm.start(longest, torch.get_num_threads())
    start_s = time.perf_counter() - started
    try:
        for name, (prompts, prefixes, settings, drawn, count) in runs.items():
            decoder = replace(vllm, settings=settings)  # the same worker, this run's stop strings
            encoded = encode_prompts(tokenizer, prompts, prefixes, settings)
            seconds, output = timed(partial(decoder.candidates, encoded, prefixes, drawn, 0), args.repeats)
            theirs[name] = count / seconds
            outputs[name].append(output)
    finally:
        vllm.close()
    report(args, ours, theirs, outputs, start_s, precision.name)


def report(args, ours: dict, theirs: dict, outputs: dict, start_s: float, precision: str) -> None:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"SmolLM2-135M, {precision}, {device}, {args.prompts} prompts, median of {args.repeats} runs")
    print("| decoding | ours | vLLM | vLLM / ours |")
    print("| --- | --- | --- | --- |")
    units = {
        "draws": f"draws/s ({args.samples} a HumanEval prompt, <= {args.new_tokens} tokens)",
        "beams": "beams/s (10-beam search, CoNaLa-style, <= 32 tokens)",
        "greedy": f"greedy candidates/s (HumanEval, <= {args.new_tokens} tokens)",
    }
    for name, unit in units.items():
        print(f"| {unit} | {ours[name]:.2f} | {theirs[name]:.2f} | {theirs[name] / ours[name]:.2f}x |")
    print(f"vLLM's start (model and key/value cache): {start_s:.1f} s")
    ours_beams, vllm_beams = outputs["beams"]
    same10 = sum(a == b for a, b in zip(ours_beams, vllm_beams, strict=True))
    same1 = sum(a[0] == b[0] for a, b in zip(ours_beams, vllm_beams, strict=True))
    total = len(ours_beams)
    print(f"Top-10 identical to ours: {same10} of {total} prompts; top-1: {same1} of {total}")
    ours_greedy, vllm_greedy = outputs["greedy"]
    same = sum(a == b for a, b in zip(ours_greedy, vllm_greedy, strict=True))
    print(f"Greedy candidates identical to ours: {same} of {len(ours_greedy)}")


if __name__ == "__main__":
    main()
