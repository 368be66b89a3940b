"""The study's recipe as it ran (its replication package's train.py): prompts tokenized with the
tokenizer's special tokens (a Llama's BOS first) and targets without, gradients clipped at the Trainer's
max_grad_norm, and validation at its own batch size."""

import copy
from dataclasses import replace

import pandas as pd
import pytest
import torch
from tokenizers import processors

from peftcode.data.prompts import (
    ALPACA,
    RESPONSE,
    chat_style,
    collate,
    encode_example,
    inference_prompts,
    prompt_ids,
)
from peftcode.hardware.precision import resolve
from peftcode.models.checkpoints import load_checkpoint
from peftcode.study.config import Study
from peftcode.study.validation import validate_config
from peftcode.training import finetune, steps
from peftcode.training.peft_setup import prepare_for_training
from peftcode.training.steps import encode_split, train_step
from tests.helpers import REPO, SCHEMA, read_yaml


@pytest.fixture(scope="module")
def llama_tokenizer(tokenizer):
    """A tokenizer in CodeLlama's layout: its post-processor puts the BOS token before every text it
    encodes, unless asked not to (SmolLM2's vocabulary, CodeLlama's template)."""
    bos = copy.deepcopy(tokenizer)
    token = bos.bos_token
    bos._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{token} $A", pair=f"{token} $A {token} $B", special_tokens=[(token, bos.bos_token_id)]
    )
    assert bos("x")["input_ids"][0] == bos.bos_token_id != bos("x", add_special_tokens=False)["input_ids"][0]
    return bos


def test_every_causal_prompt_begins_with_bos_and_no_target_carries_it(llama_tokenizer):
    bos = llama_tokenizer.bos_token_id
    example = encode_example(llama_tokenizer, "causal", "sort list `l`", "l.sort()", 64, 64)
    assert example["input_ids"][0] == bos and example["input_ids"].count(bos) == 1
    target = [t for t in example["labels"] if t != -100]
    assert bos not in target and target[-1] == llama_tokenizer.eos_token_id
    # In-context (ICL and RAG) prompts: the examples inside the prompt, one BOS at its head.
    test = pd.DataFrame({"intent": ["reverse `s`"], "code": ["s[::-1]"]})
    train = pd.DataFrame({"intent": ["sort `l`", "max of `a`"], "code": ["l.sort()", "max(a)"]})
    for shots, retriever in ((0, None), (2, None), (2, "bm25")):
        prompt = inference_prompts(test, train, "causal", shots, 0, retriever)[0]
        ids = prompt_ids(llama_tokenizer, prompt, 64, ALPACA.marker, ALPACA.special_tokens)
        assert ids[0] == bos and ids.count(bos) == 1, (shots, retriever)
    # A chat template writes its own special tokens: none is added to it.
    chat = chat_style(llama_tokenizer)
    rendered = chat.render("sort list `l`", ())
    assert (
        prompt_ids(llama_tokenizer, rendered, 64, chat.marker, chat.special_tokens)
        == llama_tokenizer(rendered, add_special_tokens=False)["input_ids"]
    )
    # A prompt cut to its limit keeps its BOS and its marker.
    long = prompt_ids(llama_tokenizer, ALPACA.render("convert " * 200, ()), 32)
    marker = llama_tokenizer(RESPONSE, add_special_tokens=False)["input_ids"]
    assert len(long) == 32 and long[0] == bos and long[-len(marker) :] == marker


def test_a_seq2seq_source_is_the_tokenizers_own_encoding(tokenizer):
    example = encode_example(tokenizer, "seq2seq", "sort list `l`", "l.sort()", 64, 64)
    assert example["input_ids"] == tokenizer("sort list `l`")["input_ids"]
    assert example["labels"] == tokenizer("l.sort()")["input_ids"]


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    return Study(validate_config(read_yaml(REPO / "tests" / "tiny.yaml"), SCHEMA)), tiny_llama


EXAMPLES = pd.DataFrame({"intent": ["sort list `l`", "open file `f`"], "code": ["sorted(l)", "open(f)"]})


def test_clipping_bounds_the_gradients_norm(tiny):
    study, folder = tiny
    settings = study.train_settings("tiny-llama", "full-ft", "conala-style")
    assert settings.max_grad_norm == 1.0  # the Trainer's default, the study's
    model, tokenizer = load_checkpoint(folder, "causal")
    model = prepare_for_training(model, settings, str(folder))
    batch = collate(encode_split(EXAMPLES, tokenizer, settings), tokenizer.pad_token_id)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    # Plain SGD at rate 1: the step moves the weights by exactly the gradient that the optimizer got.
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    limit = 1e-3
    loss, norm = train_step(model, [batch], "causal", resolve("fp32", "cpu"), optimizer, None, limit)
    moved = torch.sqrt(sum(((p.detach() - before[n]) ** 2).sum() for n, p in model.named_parameters()))
    assert norm > 10 * limit  # the batch's own gradient would exceed the limit
    assert float(moved) == pytest.approx(limit, rel=1e-3)


def test_validation_runs_at_the_eval_batch_size(tiny, tmp_path, monkeypatch):
    study, folder = tiny
    settings = replace(study.train_settings("tiny-llama", "lora", "conala-style"), eval_batch_size=3)
    data = tmp_path / "data"
    data.mkdir()
    rows = pd.DataFrame(
        {"intent": [f"sort list `l{i}`" for i in range(7)], "code": [f"sorted(l{i})" for i in range(7)]}
    )
    for split in ("train", "validation"):
        rows.assign(split=split).to_parquet(data / f"{split}.parquet")
    sizes = []
    real = steps.validation_loss

    def spy(model, examples, batch_size, *args):
        sizes.append(batch_size)
        return real(model, examples, batch_size, *args)

    monkeypatch.setattr(steps, "validation_loss", spy)
    finetune.finetune(folder, data, tmp_path / "out", tmp_path / "log.csv", tmp_path / "cost.json", settings)
    assert sizes and set(sizes) == {3}
    log = pd.read_csv(tmp_path / "log.csv")
    assert log["grad_norm"].dropna().gt(0).all()
