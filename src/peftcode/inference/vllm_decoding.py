"""Decoding with vLLM: a worker process in vLLM's own environment (:mod:`peftcode.inference.vllm_worker`)
given the same token ids as our decoder, whose answers are cut at the dataset's stop strings as ours are.

The job keeps everything else: the tokenizer and the prompts, the stop and end-of-text token ids, the
per-example seeds, the resumable chunks, the checkpoint probe. Greedy candidates and samples go through
vLLM's sampler (temperature 0: the most likely token at each step); candidates of a beam search wider than
one through vLLM's own beam search, which ends a beam at the tokenizer's end of text only (the stop strings
cut its text afterwards). Sampled draws are vLLM's random stream, not ours: each draw from a seed of its
own (the study's seed, the prompt's index in the test set and the draw's number), so that a draw depends
neither on the chunk nor on the prompts beside it, and a rerun draws the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from peftcode.inference.stops import StopTokens, cut_at_stop
from peftcode.study.settings import InferSettings

WORKER = Path(__file__).with_name("vllm_worker.py")
# vLLM's ranks of LoRA adapters (LoRAConfig.max_lora_rank): the smallest that holds the adapter's.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


class VllmError(RuntimeError):
    pass


def draw_seed(seed: int, prompt_index: int, draw: int) -> int:
    """The seed of one draw: the study's seed, the prompt's index in the test set and the draw's number."""
    return (seed * 1_000_003 + prompt_index * 1_009 + draw) % 2**31


def lora_request_rank(adapter: Path) -> int | None:
    """The rank vLLM is started with for a LoRA adapter it serves as a LoRA request; None for an adapter it
    does not (DoRA, trained embeddings or heads, other PEFT types), which is merged instead."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    # What vLLM's LoRA layers compute as PEFT does: none of the options below set, an initialisation that
    # leaves the base weights as they are (PiSSA, OLoRA and LoftQ change them).
    options = ("use_dora", "use_rslora", "modules_to_save", "rank_pattern", "alpha_pattern", "lora_bias",
               "layers_to_transform", "layer_replication", "target_parameters", "trainable_token_indices",
               "use_qalora", "alora_invocation_tokens")  # fmt: skip
    plain = (
        config.get("peft_type") == "LORA"
        and not any(config.get(option) for option in options)
        and config.get("init_lora_weights", True) in (True, False, "gaussian")
        and config.get("bias", "none") == "none"
        and config.get("r", 0) <= LORA_RANKS[-1]
    )
    return next(r for r in LORA_RANKS if r >= config["r"]) if plain else None


@dataclass
class VllmEngine:
    """One job's vLLM worker: started once with the cell's model (and LoRA adapter), asked chunk by chunk."""

    process: subprocess.Popen
    version: str = ""

    @classmethod
    def start(cls, python: str, load: dict, threads: int = 1) -> VllmEngine:
        env = {
            # On the CPU, the threads of the job (vLLM would take one), left unpinned: jobs run side by side;
            # and a key/value cache of 1 GiB (vLLM would take most of the machine's memory).
            "OMP_NUM_THREADS": str(threads),
            "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            **os.environ,
            # The engine core in the worker's own process, so that its memory is the worker's and it ends
            # with it.
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        }
        process = subprocess.Popen(
            [python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sys.stderr,
            text=True, env=env,
        )  # fmt: skip
        engine = cls(process)
        try:
            engine.version = engine.ask({"op": "load", **load})["answer"]
        except BaseException:
            engine.close()
            raise
        return engine

    def ask(self, request: dict):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise VllmError(
                f"the vLLM worker ended (exit {self.process.wait()}) on a {request['op']} request"
            )
        answer = json.loads(line)
        if "error" in answer:
            raise VllmError(f"vLLM could not {request['op']}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class VllmDecoder:
    """A cell's decoding by vLLM, to the same candidates as ours: what it loads, and the engine once
    started."""

    environment: (
        dict  # vLLM's: its interpreter (``python``) and version (``vllm``), as vllm_engine found them
    )
    load: dict  # the worker's load request: the model vLLM serves, its dtype, the LoRA adapter
    tokenizer: object
    settings: InferSettings
    end_ids: list[int]  # the model's end-of-text ids, as our decoder reads them from its generation config
    total_params: int  # the model's, as ours counts them (an adapter merged)
    merged: Path | None = None  # the checkpoint an adapter was merged into for the worker, until it loads
    engine: VllmEngine | None = None
    stop_ids: list[int] = field(default_factory=list)

    def __post_init__(self):
        stops = StopTokens(self.tokenizer, self.settings.stop) if self.settings.stop else None
        self.stop_ids = [*self.end_ids, *(stops.stop_ids.tolist() if stops else [])]

    def start(self, longest_prompt: int, threads: int) -> None:
        """The worker, its context as long as the longest prompt and its continuation."""
        load = {**self.load, "max_model_len": longest_prompt + self.settings.max_new_tokens + 1}
        self.engine = VllmEngine.start(self.environment["python"], load, threads)
        if self.engine.version != self.environment["vllm"]:
            raise VllmError(
                f"vLLM is now {self.engine.version}, where the study found {self.environment['vllm']}: "
                "delete results/engines/vllm.json to rerun the cells it decodes with this version"
            )

    def candidates(
        self, encoded: list[list[int]], prefixes: list[str], sampling: dict | None, first_index: int
    ) -> list[list[str]]:
        """Each prompt's candidates (``sampling=None``) or draws, as texts cut at the stop strings."""
        if sampling is None and self.settings.num_beams > 1:
            tokens = self.engine.ask(self.beams_request(encoded))["answer"]
        else:
            tokens = self.engine.ask(self.sample_request(encoded, sampling, first_index))["answer"]
        stop = self.settings.stop
        return [
            [cut_at_stop(self.tokenizer.decode(t, skip_special_tokens=True), stop, prefix) for t in row]
            for row, prefix in zip(tokens, prefixes, strict=True)
        ]

    def beams_request(self, encoded: list[list[int]]) -> dict:
        settings = self.settings
        return {
            "op": "beams",
            "prompts": encoded,
            "beam_width": settings.num_beams,
            "returns": min(settings.num_return_sequences, settings.num_beams),
            "max_tokens": settings.max_new_tokens,
            "length_penalty": 1.0,
        }

    def sample_request(self, encoded: list[list[int]], sampling: dict | None, first_index: int) -> dict:
        """Greedy candidates (no ``sampling``, or its temperature 0) or ``sampling``'s draws."""
        greedy = sampling is None or sampling["temperature"] == 0
        draws = 1 if greedy else sampling["samples"]
        seed = self.settings.seed
        return {
            "op": "sample",
            "prompts": encoded,
            "draws": [
                [draw_seed(seed, first_index + row, d) for d in range(draws)] for row in range(len(encoded))
            ],
            "temperature": 0.0 if greedy else sampling["temperature"],
            "top_p": 1.0 if greedy else sampling["top_p"],
            "max_tokens": self.settings.max_new_tokens,
            "stop_ids": self.stop_ids,
        }

    def probe(self, input_ids: list[int]) -> list[int]:
        """The top-1 token at every position of the probe example, under teacher forcing."""
        return self.engine.ask({"op": "probe", "prompt": list(input_ids)})["answer"]

    def memory(self) -> dict:
        return self.engine.ask({"op": "memory"})["answer"]

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
