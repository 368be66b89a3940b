"""The vLLM engine's side of a cell's decoding, run by path in vLLM's own environment (its transformers pin
differs from the project's): Python's standard library and vLLM only, no peftcode.

It answers one JSON request a line on standard input with one JSON line on the descriptor it was handed
(vLLM logs to standard output, which is pointed at standard error here). Requests carry token ids and
return token ids: the tokenizer, the prompts and the stop-text cuts stay with the job
(:mod:`peftcode.inference.vllm_decoding`), so both engines see the same ids.

- ``{"op": "load", "model": DIR, "dtype": "float32", "adapter": DIR | null, "max_lora_rank": R, ...}``
- ``{"op": "sample", "prompts": [[ids]], "draws": [[seed, ...]], "temperature", "top_p", "max_tokens",
  "stop_ids": [ids]}``: one request per draw, each from a random stream of its own seed (temperature 0:
  greedy, one draw);
- ``{"op": "beams", "prompts": [[ids]], "beam_width", "returns", "max_tokens", "length_penalty"}``: vLLM's
  own beam search, its best first;
- ``{"op": "probe", "prompt": [ids]}``: the top-1 token at every position (the checkpoint probe);
- ``{"op": "memory"}``: the worker's peak memory.
"""

import json
import os
import sys


def answer_channel():
    """The descriptor answers go to; standard output becomes standard error for vLLM's logs."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return answers


class Engine:
    def __init__(self, request: dict):
        from vllm import LLM

        self.lora = None
        options = {
            "model": request["model"],
            "dtype": request["dtype"],
            "seed": request.get("seed", 0),
            "max_model_len": request["max_model_len"],
            "enforce_eager": True,
            **request.get("options", {}),
        }
        import torch

        if not torch.cuda.is_available():
            # A prompt prefilled in parts discards a token drawn from its seeded generator and rewinds the
            # generator, which a CPU generator cannot (vLLM 0.32): prompts are prefilled whole instead.
            options["enable_chunked_prefill"] = False
        if request.get("adapter"):
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("cell", 1, request["adapter"])
            options.update(enable_lora=True, max_lora_rank=request["max_lora_rank"], max_loras=1)
        self.llm = LLM(**options)

    def sample(self, request: dict) -> list[list[list[int]]]:
        from vllm import SamplingParams, TokensPrompt

        prompts, params = [], []
        for ids, seeds in zip(request["prompts"], request["draws"], strict=True):
            for seed in seeds:
                prompts.append(TokensPrompt(prompt_token_ids=ids))
                params.append(
                    SamplingParams(
                        n=1,
                        temperature=request["temperature"],
                        top_p=request["top_p"],
                        max_tokens=request["max_tokens"],
                        seed=seed,
                        stop_token_ids=request["stop_ids"],
                        ignore_eos=True,  # the job's end ids are among stop_ids, as ours reads them
                        detokenize=False,
                    )
                )
        outputs = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        tokens = iter([list(output.outputs[0].token_ids) for output in outputs])
        return [[next(tokens) for _ in seeds] for seeds in request["draws"]]

    def probe(self, request: dict) -> list[int]:
        """The top-1 token at every position of a prompt under teacher forcing: the most likely token after
        each of its prefixes, the last one's being the greedy next token."""
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(
            max_tokens=1, temperature=0.0, prompt_logprobs=1, logprobs=1, detokenize=False
        )
        (output,) = self.llm.generate(
            [TokensPrompt(prompt_token_ids=request["prompt"])], params, lora_request=self.lora, use_tqdm=False
        )
        ranked = output.prompt_logprobs[1:]  # the first token has none: nothing precedes it
        top1 = [next(token for token, logprob in step.items() if logprob.rank == 1) for step in ranked]
        return [*top1, output.outputs[0].token_ids[0]]

    def memory(self, request: dict) -> dict:
        """The worker's peak resident set (MiB) and, on CUDA, the allocator's peak (vLLM's key/value cache
        included)."""
        with open("/proc/self/status") as status:
            peak = next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
        import torch

        gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        return {"peak_rss_mb": round(peak, 1), "gpu_peak_mb": gpu and round(gpu, 1)}

    def beams(self, request: dict) -> list[list[list[int]]]:
        from vllm import TokensPrompt
        from vllm.sampling_params import BeamSearchParams

        params = BeamSearchParams(
            beam_width=request["beam_width"],
            max_tokens=request["max_tokens"],
            length_penalty=request["length_penalty"],
        )
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in request["prompts"]]
        outputs = self.llm.beam_search(prompts, params, lora_request=self.lora)
        return [
            [beam.tokens[len(ids) :] for beam in output.sequences[: request["returns"]]]
            for ids, output in zip(request["prompts"], outputs, strict=True)
        ]


def main() -> None:
    answers = answer_channel()
    engine = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "load":
                import vllm

                engine = Engine(request)
                answer = {"answer": vllm.__version__}
            else:
                answer = {"answer": getattr(engine, request["op"])(request)}
        except Exception as error:  # the job reports it, in one line, with the request's kind
            answer = {"error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
