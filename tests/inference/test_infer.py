"""Generation: soft prompts condition every step as the training forward pass does, and the study's batched
beam search returns the candidates of transformers' own beam search run on one example at a time."""

from dataclasses import replace

import pytest
import torch
from peft import get_peft_model

from peftcode.data.prompts import prompt_ids
from peftcode.inference.decoding import conditioned_inputs, generate_candidates
from peftcode.inference.stops import StopTokens, cut_at_stop
from peftcode.models.checkpoints import load_checkpoint
from peftcode.study.config import Study
from peftcode.study.settings import MethodSettings
from peftcode.study.validation import validate_config
from peftcode.training.peft_setup import peft_config
from tests.helpers import SCHEMA, decoding, generate_one_at_a_time


@pytest.fixture(params=["shared prompt", "prompt cache copied"])
def continuations(request, monkeypatch):
    """Both ways a prompt's beams or draws reach its keys and values: shared, or copied for models whose
    attention cannot be replaced (see peftcode.inference.shared_prompt)."""
    from peftcode.inference import shared_prompt

    if request.param == "prompt cache copied":
        monkeypatch.setattr(shared_prompt, "serves", lambda model: False)
    return request.param


def test_batched_beam_search_returns_the_candidates_of_generate(tiny_llama, continuations):
    model, tokenizer = load_checkpoint(tiny_llama, "causal")
    model.eval()
    # Prompts of different lengths, left-padded in one batch; a stop string that some beams hit early.
    prompts = [f"### Instruction:\n{'sort a list ' * n}\n### Response:\n" for n in (1, 3, 6, 2, 5)]
    settings = decoding(
        max_new_tokens=12, stop="e", num_beams=4, num_return_sequences=3, batch_size=5, 
    )  # fmt: skip
    expected = generate_one_at_a_time(model, tokenizer, prompts, settings)
    assert generate_candidates(model, tokenizer, prompts, settings) == expected
    # A length penalty from the model's generation config is followed; a suppressed token, which reshapes
    # the scores, sends the model to generate itself.
    top_token = tokenizer(expected[0][0], add_special_tokens=False)["input_ids"][0]
    for name, value in (("length_penalty", 0.5), ("suppress_tokens", [top_token])):
        setattr(model.generation_config, name, value)
        reference = generate_one_at_a_time(model, tokenizer, prompts, settings)
        assert reference != expected and generate_candidates(model, tokenizer, prompts, settings) == reference
        expected = reference


def test_sampled_draws_of_a_prompt_do_not_depend_on_the_batch(tiny_llama):
    model, tokenizer = load_checkpoint(tiny_llama, "causal")
    model.eval()
    prompts = [f"### Instruction:\n{'add two numbers ' * n}\n### Response:\n" for n in (2, 5, 1, 3)]
    settings = decoding(
        seed=7, max_new_tokens=8, stop=None, num_beams=1, num_return_sequences=1, batch_size=4, 
    )  # fmt: skip
    sampling = {"samples": 3, "temperature": 0.8, "top_p": 0.95}
    draws = generate_candidates(model, tokenizer, prompts, settings, sampling)
    assert draws == generate_candidates(model, tokenizer, prompts, replace(settings, batch_size=1), sampling)
    assert draws[:2] == generate_candidates(model, tokenizer, prompts[:2], settings, sampling)
    assert len({tuple(d) for d in draws}) == len(prompts)


def greedy_by_forward(model, ids: torch.Tensor, steps: int) -> list[int]:
    """Greedy decoding through the training forward pass, recomputing everything each step."""
    current = ids
    for _ in range(steps):
        logits = model(input_ids=current, attention_mask=torch.ones_like(current)).logits
        current = torch.cat([current, logits[:, -1:].argmax(-1)], dim=1)
    return current[0, ids.shape[1] :].tolist()


@pytest.mark.parametrize(
    "settings",
    [
        {"kind": "prompt-tuning", "num_virtual_tokens": 4, "init_text": "Generate Python code."},
        {"kind": "prefix-tuning", "num_virtual_tokens": 4},
    ],
)
def test_soft_prompt_generation_matches_the_training_forward_pass(tiny_llama, tiny_config, settings):
    lora = Study(validate_config(tiny_config, SCHEMA)).train_settings("tiny-llama", "lora", "conala-style")
    trained = replace(lora, method=MethodSettings(**settings), target_modules={})
    torch.manual_seed(0)
    base, tokenizer = load_checkpoint(tiny_llama, "causal")
    model = get_peft_model(base, peft_config(trained, str(tiny_llama))).eval()
    tokenizer.padding_side = "left"
    prompts = [
        "### Instruction:\nreverse `s`\n### Response:\n",
        "### Instruction:\nsum of `a`\n### Response:\n",
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        generator, inputs = conditioned_inputs(model, batch, "causal")
        output = generator.generate(
            **inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        if "input_ids" in inputs:
            output = output[:, batch["input_ids"].shape[1] :]
        for row, prompt in enumerate(prompts):
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            assert output[row].tolist() == greedy_by_forward(model, ids, 6)


def test_candidates_are_cut_at_the_stop_string():
    assert cut_at_stop("s[::-1]\nprint(s)", "\n") == "s[::-1]"
    assert cut_at_stop("  def f():\n    pass\n", None) == "def f():\n    pass"
    assert cut_at_stop("x = 1\n```\nIt sets x.\n### Response:", ["###", "```"]) == "x = 1"
    # After a prefix the body keeps its indentation.
    assert (
        cut_at_stop("    return a + b\n### Response:", "###", "def f(a, b):\n")
        == "def f(a, b):\n    return a + b"
    )


def test_a_draw_ends_at_a_token_holding_any_of_the_stop_strings(tokenizer):
    from peftcode.inference.stops import StopTokens

    stops = ["###", "```"]
    texts = [tokenizer.decode([i]) for i in StopTokens(tokenizer, stops).stop_ids.tolist()]
    assert all(any(stop in text for stop in stops) for text in texts)
    assert {stop for stop in stops for text in texts if stop in text} == set(stops)


def test_each_prompt_ends_with_its_prefix_and_each_candidate_begins_with_it(tiny_llama):
    model, tokenizer = load_checkpoint(tiny_llama, "causal")
    model.eval()
    prompts = [f"### Instruction:\nWrite the body of {name}.\n### Response:\n" for name in ("f", "g")]
    prefixes = ["def f(x):\n", 'def g(a, b):\n    """Sum."""\n']
    settings = decoding(
        max_new_tokens=6, stop=None, num_beams=2, num_return_sequences=2, batch_size=2, seed=7,
    )  # fmt: skip
    searched = generate_candidates(model, tokenizer, prompts, settings, prefixes=prefixes)
    drawn = generate_candidates(
        model,
        tokenizer,
        prompts,
        settings,
        {"samples": 2, "temperature": 1.0, "top_p": 0.95},
        prefixes=prefixes,
    )
    for candidates in (searched, drawn):
        assert all(
            c.startswith(prefix) for row, prefix in zip(candidates, prefixes, strict=True) for c in row
        )
    # What follows the prefix is what the model writes after the prompt with the prefix in it.
    alone = generate_candidates(
        model, tokenizer, [p + f for p, f in zip(prompts, prefixes, strict=True)], settings
    )
    assert [[c[len(f) :].strip() for c in row] for row, f in zip(searched, prefixes, strict=True)] == alone


@torch.no_grad()
def sample_one_at_a_time(model, tokenizer, prompts: list[str], settings, sampling: dict) -> list[list[str]]:
    """The reference for sampled programs: each prompt alone, each of its draws alone."""
    from peftcode.inference.decoding import eos_ids
    from peftcode.inference.sampling import sample

    ends = torch.cat((torch.tensor(eos_ids(model)), StopTokens(tokenizer, settings.stop).stop_ids))
    drawn = []
    for index, prompt in enumerate(prompts):
        ids = torch.tensor([prompt_ids(tokenizer, prompt, settings.max_input_length)])
        texts = []
        for draw in range(sampling["samples"]):
            tokens = sample(
                model, ids, torch.ones_like(ids), [index], 1, settings.max_new_tokens,
                sampling["temperature"], sampling["top_p"], settings.seed, ends, first_draw=draw,
            )[0][0]  # fmt: skip
            texts.append(cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), settings.stop))
        drawn.append(texts)
    return drawn


def test_batched_draws_are_those_of_one_prompt_and_one_draw_at_a_time(tiny_llama, continuations):
    model, tokenizer = load_checkpoint(tiny_llama, "causal")
    model.eval()
    prompts = [f"### Instruction:\n{'reverse a string ' * n}\n### Response:\n" for n in (2, 5, 1, 4)]
    settings = decoding(
        max_new_tokens=10, stop="e", num_beams=1, num_return_sequences=1, batch_size=4, seed=7,
    )  # fmt: skip
    sampling = {"samples": 3, "temperature": 1.5, "top_p": 0.95}
    batched = generate_candidates(model, tokenizer, prompts, settings, sampling)
    assert batched == sample_one_at_a_time(model, tokenizer, prompts, settings, sampling)
    assert len({text for draws in batched for text in draws}) > 6, "draws differ from each other"
    # The draws follow the cell's seed, and no other prompt's.
    assert generate_candidates(model, tokenizer, prompts, replace(settings, seed=8), sampling) != batched
    assert generate_candidates(model, tokenizer, prompts[:1], settings, sampling)[0] == batched[0]


def test_next_tokens_keeps_the_top_p_set_and_greedy_takes_the_most_likely():
    from peftcode.inference.sampling import next_tokens

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 4))
    uniforms = torch.tensor([0.0, 0.5, 0.7, 0.999])
    assert next_tokens(logits, 1.0, 0.8, uniforms).tolist() == [0, 0, 1, 1]  # 0.5 + 0.3 reach 0.8
    assert next_tokens(logits, 1.0, 1.0, uniforms).tolist() == [0, 1, 1, 3]  # cumulative 0.5, 0.8, 0.95
    assert next_tokens(logits, 0, 0.8, uniforms).tolist() == [0, 0, 0, 0]


def test_next_tokens_over_a_large_vocabulary_match_sorting_all_of_it():
    """The top-p set is looked for among the most likely tokens first; rows whose set lies beyond them
    (here the flat ones, at a high temperature) sort the whole vocabulary."""
    from peftcode.inference.sampling import CANDIDATES, next_tokens

    def sorting_everything(logits, temperature, top_p, uniforms):
        probabilities = torch.softmax(logits / temperature, dim=-1)
        ranked, order = probabilities.sort(dim=-1, descending=True)
        cumulative = ranked.cumsum(-1)
        kept = torch.where(cumulative - ranked < top_p, ranked, 0.0).cumsum(-1)
        picked = torch.searchsorted(kept, uniforms.unsqueeze(-1) * kept[:, -1:], right=True)
        return order.gather(-1, picked.clamp(max=kept.shape[-1] - 1)).squeeze(-1)

    generator = torch.Generator().manual_seed(0)
    vocabulary = 20 * CANDIDATES
    peaked = torch.randn(6, vocabulary, generator=generator) * 8
    flat = torch.randn(6, vocabulary, generator=generator) * 0.1
    logits = torch.cat((peaked, flat))[torch.randperm(12, generator=generator)]
    for temperature in (0.2, 0.8, 3.0):
        uniforms = torch.rand(12, generator=generator)
        expected = sorting_everything(logits, temperature, 0.95, uniforms)
        assert torch.equal(next_tokens(logits, temperature, 0.95, uniforms), expected)
