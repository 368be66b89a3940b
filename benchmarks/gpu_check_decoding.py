"""benchmarks/gpu_check.py's decoding section: peftcode's batched beam search and sampler against
transformers' ``generate`` on the same prompts, as tests/inference/test_infer.py compares them: ``generate``
on each prompt alone is the reference; both are timed, with ``generate`` on the whole left-padded batch
beside."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch
from gpu_check_common import (
    Deadline,
    Mode,
    Table,
    build_model,
    left_padded,
    random_prompts,
    release,
    run_row,
    search_problem,
    synchronize,
)

from peftcode.hardware.precision import Precision
from peftcode.inference.beam_search import beam_search
from peftcode.inference.sampling import sample

COLUMNS = [
    "model", "search", "prompts x sequences", "identical", "first divergence (step, earliest)",
    "ours (seq/s)", "generate, a prompt at a time (seq/s)", "generate, batched (seq/s)", "target",
]  # fmt: skip
PROMPT_LENGTH = 48
TEMPERATURE, TOP_P = 0.8, 0.95


def up_to_end(tokens: list[int], ends: set[int]) -> list[int]:
    """A sequence up to its first end token, included: what ours returns, where ``generate`` pads after."""
    for index, token in enumerate(tokens):
        if token in ends:
            return tokens[: index + 1]
    return tokens


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def timed(work):
    synchronize()
    started = time.perf_counter()
    result = work()
    synchronize()
    return result, time.perf_counter() - started


def run_generate(model, prompts, mask, options: dict, pad_id: int):
    return model.generate(input_ids=prompts, attention_mask=mask, pad_token_id=pad_id, **options)


def compare(table, label, search, ours, alone, batched_s, ours_s, alone_s, exact: bool) -> None:
    pairs = [
        (a, b) for mine, theirs in zip(ours, alone, strict=True) for a, b in zip(mine, theirs, strict=True)
    ]
    sequences = len(pairs)
    same = sum(a == b for a, b in pairs)
    steps = [first_difference(a, b) for a, b in pairs if a != b]
    divergence = "none" if not steps else f"{min(steps)} ({len(steps)} differ)"
    if exact:
        verdict = "PASS" if same == sequences else "FAIL"
    else:
        verdict = "measured (near-ties of random weights may round apart in bf16)"
    shape = f"{len(ours)} x {len(ours[0])}"
    rates = (sequences / ours_s, sequences / alone_s, sequences / batched_s)
    table.add(label, search, shape, f"{same / sequences:.2f}", divergence, *rates, verdict)


def decode_model(table: Table, mode: Mode, label: str, fields: dict, sizes: tuple, deadline: Deadline):
    count, new_tokens, beams, draws = sizes
    name = "bf16" if mode.cuda else "fp32"
    precision = Precision(name, mode.device)
    model = build_model(fields, precision.dtype, mode.device).eval()
    config = model.generation_config
    ends = [config.eos_token_id] if isinstance(config.eos_token_id, int) else list(config.eos_token_id)
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else ends[0]
    prompts = random_prompts(count, PROMPT_LENGTH, model.config.vocab_size, 3)
    ids, mask = left_padded(prompts, pad_id, mode.device)
    alone = [torch.tensor([p], device=mode.device) for p in prompts]
    end_ids = torch.tensor(ends)
    label = f"{label} ({name})"

    def each_alone(options: dict) -> list[list[list[int]]]:
        found = []
        for prompt in alone:
            output = run_generate(model, prompt, torch.ones_like(prompt), options, pad_id)
            found.append([up_to_end(row[prompt.shape[1] :].tolist(), set(ends)) for row in output])
        return found

    searches = {
        "greedy": (
            lambda: sample(model, ids, mask, list(range(count)), 1, new_tokens, 0.0, 1.0, 0, end_ids),
            {"do_sample": False, "num_beams": 1},
            True,
        ),
        f"beam search, {beams} beams": (
            lambda: beam_search(
                model,
                ids,
                mask,
                beams,
                beams,
                new_tokens,
                ends,
                torch.tensor([], dtype=torch.long),
                length_penalty=config.length_penalty or 1.0,
                early_stopping=True,
            ),
            {"do_sample": False, "num_beams": beams, "num_return_sequences": beams, "early_stopping": True},
            True,
        ),
        f"sampling, {draws} draws (T {TEMPERATURE}, top-p {TOP_P})": (
            lambda: sample(
                model, ids, mask, list(range(count)), draws, new_tokens, TEMPERATURE, TOP_P, 0, end_ids
            ),
            # Our sampler has no top-k: neither has generate here.
            {
                "do_sample": True,
                "num_return_sequences": draws,
                "temperature": TEMPERATURE,
                "top_p": TOP_P,
                "top_k": 0,
            },
            False,
        ),
    }
    with torch.no_grad(), precision.autocast():
        # The first calls set up CUDA's kernels and workspaces, which no timing should include.
        run_generate(model, alone[0], torch.ones_like(alone[0]), {"max_new_tokens": 2}, pad_id)
        sample(model, ids[:1], mask[:1], [0], 1, 2, 0.0, 1.0, 0, end_ids)
        for search, (ours_call, options, reference) in searches.items():

            def work(search=search, ours_call=ours_call, options=options, reference=reference) -> None:
                options = {**options, "max_new_tokens": new_tokens}
                ours, ours_s = timed(ours_call)
                theirs, alone_s = timed(lambda: each_alone(options))
                _, batched_s = timed(lambda: run_generate(model, ids, mask, options, pad_id))
                if reference:
                    compare(
                        table, label, search, ours, theirs, batched_s, ours_s, alone_s, exact=name == "fp32"
                    )
                    return
                # Draws of random streams of their own cannot match generate's: their count and their
                # spread are what is checked.
                sequences = sum(len(d) for d in ours)
                distinct = len({tuple(d) for row in ours for d in row}) / sequences
                table.add(
                    label, search, f"{len(ours)} x {len(ours[0])}", "n/a (own random streams)",
                    f"distinct draws {distinct:.2f}", sequences / ours_s, sequences / alone_s,
                    sequences / batched_s, "measured",
                )  # fmt: skip

            run_row(table, f"{label}: {search}", deadline, work)


def decoding(mode: Mode, deadline: Deadline) -> Table:
    """Section 3: identical candidates and sequences per second, ours against generate."""
    table = Table("3. Decoding: peftcode's search vs transformers' generate", COLUMNS)
    table.notes.append(
        f"Random prompts of {PROMPT_LENGTH // 2}-{PROMPT_LENGTH} tokens, left-padded in one batch for ours; "
        "the reference is generate on each prompt alone. Random weights give near-uniform next-token "
        "distributions, so near-ties are more common than in a trained model."
    )
    problem = search_problem()
    models = [(mode.small_name, mode.small), (mode.big_name, mode.big)]
    sizes = list(mode.decoding.values())
    for (label, fields), size in zip(models[: len(sizes)], sizes, strict=True):
        if problem is not None:
            table.add(label, f"skipped: {problem}", *[""] * (len(COLUMNS) - 2))
            continue
        try:
            decode_model(table, mode, label, fields, size, deadline)
        except Exception as error:  # noqa: BLE001 (reported in the table)
            table.fail(label, error)
        release()
    table.notes.append(vllm_rows(mode))
    return table


def vllm_rows(mode: Mode) -> str:
    """vLLM against ours on SmolLM2-135M (benchmarks/bench_vllm.py, bfloat16 on the GPU), where the machine
    has a vLLM environment: its rows decide what generation.engine's auto picks."""
    from peftcode.inference.vllm_engine import vllm_environment

    if mode.device.type != "cuda":
        return "vLLM: its rows run on a GPU (benchmarks/bench_vllm.py measures it on this CPU)."
    if vllm_environment() is None:
        return "vLLM: no vLLM environment on this machine (make vllm), so no vLLM rows."
    size = ["--precision", "bf16", "--prompts", "16", "--repeats", "2"]
    bench = Path(__file__).with_name("bench_vllm.py")
    result = subprocess.run([sys.executable, str(bench), *size],
                            capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    if result.returncode != 0:
        return f"vLLM: bench_vllm.py failed: {result.stderr.strip().splitlines()[-1:]}"
    kept = ("|", "SmolLM2", "vLLM", "Top", "Greedy")
    table = [line for line in result.stdout.splitlines() if line.startswith(kept)]
    return "vLLM against ours (benchmarks/bench_vllm.py):\n\n" + "\n".join(table)
