"""Two torch processes side by side on a machine's cores, as the suite's two test workers run (or two jobs a
study runs at once): each with threads for every core, against each with its share of the cores. torch's
threads wait for each other by spinning, so processes that together ask for more threads than there are
cores slow each other down far more than sharing the cores would.

The work: beam search (4 beams, 24 new tokens, 4 prompts) and a few LoRA-sized backward passes on a model
of SmolLM2-135M's shape with random weights, the kind of work a test or a model job does.

Usage: python benchmarks/bench_threads.py [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

WORK = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
from transformers import LlamaConfig, LlamaForCausalLM
config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
model = LlamaForCausalLM(config).eval()
ids = torch.randint(0, 49152, (4, 24))
start = time.perf_counter()
with torch.no_grad():
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), num_beams=4, max_new_tokens=24,
                   min_new_tokens=24, do_sample=False, pad_token_id=0)
x, w = torch.randn(64, 576), torch.randn(576, 576, requires_grad=True)
for _ in range(200):
    (x @ w).pow(2).sum().backward()
print(time.perf_counter() - start)
"""


def side_by_side(processes: int, threads: int) -> float:
    """The wall time until the last of ``processes`` processes of ``threads`` threads each has done its
    work (each process's own timing, model building excluded)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-c", WORK, str(threads)]
    started = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)
    ]
    return max(float(p.communicate()[0].strip().splitlines()[-1]) for p in started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    cases = [
        (f"1 process, {cores} threads", 1, cores),
        (f"2 processes, {cores} threads each", 2, cores),
        (f"2 processes, {max(1, cores // 2)} thread(s) each", 2, max(1, cores // 2)),
    ]
    print(f"| {cores} cores | seconds (slowest process) |\n| --- | --- |")
    for name, processes, threads in cases:
        times = [side_by_side(processes, threads) for _ in range(args.repeats)]
        print(f"| {name} | {min(times):.1f} |")


if __name__ == "__main__":
    main()
