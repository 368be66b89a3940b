"""Prompts and training examples, as in Weyssow et al.

Causal models read a prompt in one of two styles and learn ``{code}<eos>``, with the loss on the target
tokens only: ``alpaca``, the study's ``### Instruction:\\n{intent}\\n### Response:\\n`` (in-context
examples as whole instruction/response pairs before it), or ``chat``, the tokenizer's own chat template
(the instruction as the user's turn, in-context examples as earlier user and assistant turns; the
assistant's turn ends with the tokenizer's end-of-turn token, its EOS, which the model learns). Seq2seq
models read the intent and learn the code.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

from peftcode.study.families import is_encoder_decoder

INSTRUCTION = "### Instruction:\n"
RESPONSE = "\n### Response:\n"
IGNORE_INDEX = -100


def causal_prompt(intent: str, shots: Sequence[tuple[str, str]] = ()) -> str:
    examples = "".join(f"{INSTRUCTION}{shot_intent}{RESPONSE}{code}\n\n" for shot_intent, code in shots)
    return f"{examples}{INSTRUCTION}{intent}{RESPONSE}"


@dataclass(frozen=True)
class PromptStyle:
    """How a causal model is prompted: ``render(intent, shots)`` and the ``marker`` that ends every prompt
    (what a truncated prompt keeps at its end, so that the model still answers)."""

    name: str
    render: Callable[[str, Sequence[tuple[str, str]]], str]
    marker: str
    # Whether the tokenizer adds its special tokens (a Llama's BOS) to a prompt, as the study's
    # ``tokenizer(prompt)`` did; a chat template writes its own.
    special_tokens: bool = True


ALPACA = PromptStyle("alpaca", causal_prompt, RESPONSE)


def chat_style(tokenizer: PreTrainedTokenizerBase) -> PromptStyle:
    """The tokenizer's chat template: the instruction as the user's turn, in-context examples as earlier
    turns, and the generation prompt that opens the assistant's turn."""
    if not tokenizer.chat_template:
        raise ValueError("prompt: chat needs a tokenizer with a chat template, and this one has none")

    def render(intent: str, shots: Sequence[tuple[str, str]] = ()) -> str:
        turns = [
            turn
            for shot_intent, code in shots
            for turn in ({"role": "user", "content": shot_intent}, {"role": "assistant", "content": code})
        ]
        turns.append({"role": "user", "content": intent})
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)

    # The end of the user's turn and the opening of the assistant's: what follows the instruction.
    probe = render("\x00")
    return PromptStyle("chat", render, probe[probe.index("\x00") + 1 :], special_tokens=False)


def prompt_style(name: str, tokenizer: PreTrainedTokenizerBase) -> PromptStyle:
    return chat_style(tokenizer) if name == "chat" else ALPACA


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    max_length: int | None,
    marker: str = RESPONSE,
    special_tokens: bool = True,
) -> list[int]:
    """Token ids of a causal prompt, with the tokenizer's special tokens where ``special_tokens`` (a
    Llama's BOS first); a long one keeps its head and always ends with ``marker`` (the style's, and a
    prefix after it), or only the end of the marker where the marker alone is too long."""
    ids = tokenizer(prompt, add_special_tokens=special_tokens)["input_ids"]
    if max_length is None or len(ids) <= max_length:
        return ids
    marker_ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
    return (ids[: max(max_length - len(marker_ids), 0)] + marker_ids)[-max_length:]


def encode_example(
    tokenizer: PreTrainedTokenizerBase,
    family: str,
    intent: str,
    code: str,
    max_input_length: int,
    max_target_length: int,
    style: PromptStyle = ALPACA,
) -> dict[str, list[int]]:
    """One training example: ``input_ids`` and ``labels`` (prompt positions masked for causal models)."""
    if is_encoder_decoder(family):
        source = tokenizer(intent, max_length=max_input_length, truncation=True)["input_ids"]
        target = tokenizer(code, max_length=max_target_length, truncation=True)["input_ids"]
        return {"input_ids": source, "labels": target}
    prompt = prompt_ids(
        tokenizer, style.render(intent, ()), max_input_length, style.marker, style.special_tokens
    )
    target = tokenizer(code, add_special_tokens=False)["input_ids"][: max_target_length - 1]
    target.append(tokenizer.eos_token_id)
    return {"input_ids": prompt + target, "labels": [IGNORE_INDEX] * len(prompt) + target}


def retrieved_examples(
    queries: Sequence[str], pairs: Sequence[tuple[str, str]], shots: int
) -> list[list[tuple[str, str]]]:
    """For each query, the ``shots`` (intent, code) pairs whose intents score highest under BM25 against
    it, most similar last."""
    # Imported here, for retrieval alone: training and decoding import this module on machines without
    # bm25s (benchmarks/gpu_check.py's GPU machine).
    import bm25s

    tokenize = partial(bm25s.tokenize, stopwords="en", return_ids=False, show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(tokenize([intent for intent, _ in pairs]), show_progress=False)
    hits, _ = retriever.retrieve(tokenize(list(queries)), k=min(shots, len(pairs)), show_progress=False)
    return [[pairs[i] for i in reversed(row)] for row in hits.tolist()]


def inference_prompts(
    test: pd.DataFrame,
    train: pd.DataFrame | None,
    family: str,
    shots: int = 0,
    seed: int = 0,
    retriever: str | None = None,
    style: PromptStyle = ALPACA,
    similar: list[list[int]] | None = None,
) -> list[str]:
    """The prompt of every test example, in ``style``, after ``shots`` training examples of its own: drawn
    at random from ``seed``, or retrieved as the most similar (``retriever`` "bm25", or "dense" with
    ``similar``, each test example's training examples most similar first, see
    :mod:`peftcode.data.retrieval`)."""
    if is_encoder_decoder(family):
        if shots:
            raise ValueError("in-context examples need a causal model")
        return list(test["intent"])
    intents = list(test["intent"])
    if not shots:
        return [style.render(intent, ()) for intent in intents]
    pairs = list(zip(train["intent"], train["code"], strict=True))
    if retriever == "bm25":
        chosen = retrieved_examples(intents, pairs, shots)
    elif retriever == "dense":
        chosen = [[pairs[i] for i in reversed(row[:shots])] for row in similar]
    else:
        rng = random.Random(seed)
        chosen = [rng.sample(pairs, shots) for _ in intents]
    return [style.render(intent, examples) for intent, examples in zip(intents, chosen, strict=True)]


def collate(
    examples: list[dict[str, list[int]]], pad_id: int, device: torch.device | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example."""
    inputs = max(len(e["input_ids"]) for e in examples)
    labels = max(len(e["labels"]) for e in examples)
    input_ids = torch.full((len(examples), inputs), pad_id)
    attention = torch.zeros((len(examples), inputs), dtype=torch.long)
    label_ids = torch.full((len(examples), labels), IGNORE_INDEX)
    for row, example in enumerate(examples):
        input_ids[row, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
        attention[row, : len(example["input_ids"])] = 1
        label_ids[row, : len(example["labels"])] = torch.tensor(example["labels"])
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": label_ids}
    return {key: value.to(device) for key, value in batch.items()} if device else batch
