"""A fine-tune's checkpoint travels: copied to a fresh folder, it loads with plain transformers and PEFT and
generates what our inference generates, and its model card's metadata parses."""

import shutil
from dataclasses import replace

import pytest
import torch
from huggingface_hub import ModelCard
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer

from peftcode.data.prompts import causal_prompt
from peftcode.inference.decoding import generate_candidates
from peftcode.inference.infer import load_for_inference
from peftcode.training.finetune import finetune
from tests.helpers import tiny_workspace

PROMPT = causal_prompt("sort list `l` in reverse order")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_llama):
    folder = tmp_path_factory.mktemp("export")
    return tiny_workspace(folder, {"train": 8, "validation": 2, "test": 2}, tiny_llama), folder


def greedy(model, tokenizer, **kwargs) -> list[int]:
    inputs = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False, num_beams=1, **kwargs)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize("method", ["lora", "prompt-tuning", "full-ft"])
def test_a_checkpoint_copied_elsewhere_loads_with_plain_peft_and_generates_as_our_inference(
    workspace, method, tmp_path
):
    study, folder = workspace
    settings = replace(study.train_settings("tiny-llama", method, "conala-style"), batch_size=4)
    out = tmp_path / "run" / "checkpoint"
    finetune(
        folder / "model", folder / "conala-style", out, tmp_path / "log.csv", tmp_path / "m.json", settings
    )
    travelled = tmp_path / "elsewhere" / "adapter"
    shutil.copytree(out, travelled)
    shutil.rmtree(tmp_path / "run")
    card = ModelCard.load(travelled / "README.md")
    assert card.data.library_name == ("transformers" if method == "full-ft" else "peft")
    assert card.data.pipeline_tag == "text-generation" and "peftcode" in card.data.tags
    assert card.data.datasets == ["conala-style"] and "How to use" in card.text
    tokenizer = AutoTokenizer.from_pretrained(travelled)
    if method == "full-ft":
        theirs = greedy(AutoModelForCausalLM.from_pretrained(travelled), tokenizer)
        ours_model, ours_tokenizer = load_for_inference(travelled, None, "causal")
    else:
        # As the card says: soft prompts generate without the cache.
        cache = {"use_cache": False} if method == "prompt-tuning" else {}
        assert ("use_cache=False" in card.text) == bool(cache)
        theirs = greedy(AutoPeftModelForCausalLM.from_pretrained(travelled), tokenizer, **cache)
        ours_model, ours_tokenizer = load_for_inference(folder / "model", travelled, "causal")
    decoding = replace(
        study.configured_infer_settings("tiny-llama", method, "conala-style"),
        stop=None, num_beams=1, num_return_sequences=1, batch_size=1, max_new_tokens=8,
    )  # fmt: skip
    ours = generate_candidates(ours_model, ours_tokenizer, [PROMPT], decoding)[0][0]
    assert tokenizer.decode(theirs, skip_special_tokens=True).strip() == ours
