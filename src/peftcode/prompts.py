"""Prompts and training examples, as in Weyssow et al.

Causal models read ``### Instruction:\\n{intent}\\n### Response:\\n`` and learn ``{code}<eos>``, with the
loss on the target tokens only. Seq2seq models read the intent and learn the code. In-context examples are
whole instruction/response pairs placed before the test prompt.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import partial

import bm25s
import pandas as pd
from transformers import PreTrainedTokenizerBase

INSTRUCTION = "### Instruction:\n"
RESPONSE = "\n### Response:\n"
IGNORE_INDEX = -100


def causal_prompt(intent: str, shots: Sequence[tuple[str, str]] = ()) -> str:
    examples = "".join(f"{INSTRUCTION}{shot_intent}{RESPONSE}{code}\n\n" for shot_intent, code in shots)
    return f"{examples}{INSTRUCTION}{intent}{RESPONSE}"


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, max_length: int | None) -> list[int]:
    """Token ids of a causal prompt; a long one keeps its head and always ends with the response marker."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if max_length is None or len(ids) <= max_length:
        return ids
    marker = tokenizer(RESPONSE, add_special_tokens=False)["input_ids"]
    return ids[: max_length - len(marker)] + marker


def encode_example(
    tokenizer: PreTrainedTokenizerBase,
    family: str,
    intent: str,
    code: str,
    max_input_length: int,
    max_target_length: int,
) -> dict[str, list[int]]:
    """One training example: ``input_ids`` and ``labels`` (prompt positions masked for causal models)."""
    if family == "seq2seq":
        source = tokenizer(intent, max_length=max_input_length, truncation=True)["input_ids"]
        target = tokenizer(code, max_length=max_target_length, truncation=True)["input_ids"]
        return {"input_ids": source, "labels": target}
    prompt = prompt_ids(tokenizer, causal_prompt(intent), max_input_length)
    target = tokenizer(code, add_special_tokens=False)["input_ids"][: max_target_length - 1]
    target.append(tokenizer.eos_token_id)
    return {"input_ids": prompt + target, "labels": [IGNORE_INDEX] * len(prompt) + target}


def retrieved_examples(
    queries: Sequence[str], pairs: Sequence[tuple[str, str]], shots: int
) -> list[list[tuple[str, str]]]:
    """For each query, the ``shots`` (intent, code) pairs whose intents score highest under BM25 against
    it, most similar last."""
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
) -> list[str]:
    """The prompt of every test example, after ``shots`` training examples of its own: drawn at random
    from ``seed``, or retrieved as the most similar (``retriever``: "bm25")."""
    if family == "seq2seq":
        if shots:
            raise ValueError("in-context examples need a causal model")
        return list(test["intent"])
    intents = list(test["intent"])
    if not shots:
        return [causal_prompt(intent) for intent in intents]
    pairs = list(zip(train["intent"], train["code"], strict=True))
    if retriever == "bm25":
        return [
            causal_prompt(intent, examples)
            for intent, examples in zip(intents, retrieved_examples(intents, pairs, shots), strict=True)
        ]
    rng = random.Random(seed)
    return [causal_prompt(intent, rng.sample(pairs, shots)) for intent in intents]
