import pandas as pd
import pytest

from peftcode.data.prompts import IGNORE_INDEX, causal_prompt, encode_example, inference_prompts


def test_causal_prompt_is_the_papers_template():
    assert causal_prompt("sort list `l`") == "### Instruction:\nsort list `l`\n### Response:\n"


def test_shots_come_before_the_test_prompt_as_whole_pairs():
    prompt = causal_prompt("reverse `s`", [("sort `l`", "l.sort()"), ("max of `a`", "max(a)")])
    assert prompt == (
        "### Instruction:\nsort `l`\n### Response:\nl.sort()\n\n"
        "### Instruction:\nmax of `a`\n### Response:\nmax(a)\n\n"
        "### Instruction:\nreverse `s`\n### Response:\n"
    )


def test_causal_labels_mask_the_prompt_and_end_with_eos(tokenizer):
    example = encode_example(tokenizer, "causal", "sort list `l`", "l.sort()", 64, 64)
    prompt = tokenizer(causal_prompt("sort list `l`"), add_special_tokens=False)["input_ids"]
    target = tokenizer("l.sort()", add_special_tokens=False)["input_ids"]
    assert example["input_ids"] == prompt + target + [tokenizer.eos_token_id]
    assert example["labels"] == [IGNORE_INDEX] * len(prompt) + target + [tokenizer.eos_token_id]


def test_long_prompts_and_targets_are_truncated_keeping_the_response_marker_and_eos(tokenizer):
    intent = "convert " * 100
    code = "x = " + " + ".join(["1"] * 100)
    example = encode_example(tokenizer, "causal", intent, code, 32, 16)
    labelled = [t for t in example["labels"] if t != IGNORE_INDEX]
    assert len(example["input_ids"]) - len(labelled) == 32
    assert len(labelled) == 16 and labelled[-1] == tokenizer.eos_token_id
    prompt = tokenizer.decode(example["input_ids"][:32])
    assert prompt.startswith("### Instruction:\nconvert") and prompt.endswith("\n### Response:\n")


def test_a_truncated_prompt_keeps_the_code_prefix_after_its_marker(tokenizer):
    from peftcode.data.prompts import RESPONSE, prompt_ids

    prefix = 'def add(a, b):\n    """Add two numbers."""\n'
    prompt = causal_prompt("write the body " * 50) + prefix
    kept = tokenizer.decode(prompt_ids(tokenizer, prompt, 40, RESPONSE + prefix))
    assert kept.startswith("### Instruction:\nwrite the body") and kept.endswith(RESPONSE + prefix)
    # A marker longer than the limit leaves the prompt's last tokens, never more than the limit.
    ids = prompt_ids(tokenizer, prompt, 8, RESPONSE + prefix)
    assert len(ids) == 8 and tokenizer.decode(ids).endswith('numbers."""\n')


def test_seq2seq_examples_read_the_intent_and_learn_the_code(tokenizer):
    example = encode_example(tokenizer, "seq2seq", "sort list `l`", "l.sort()", 64, 64)
    assert example["input_ids"] == tokenizer("sort list `l`")["input_ids"]
    assert example["labels"] == tokenizer("l.sort()")["input_ids"]


def test_icl_prompts_sample_shots_per_example_reproducibly_by_seed():
    train = pd.DataFrame(
        {"intent": [f"intent {i}" for i in range(20)], "code": [f"code{i}" for i in range(20)]}
    )
    test = pd.DataFrame({"intent": ["a", "b", "c"]})
    first = inference_prompts(test, train, "causal", shots=3, seed=42)
    assert first == inference_prompts(test, train, "causal", shots=3, seed=42)
    assert first != inference_prompts(test, train, "causal", shots=3, seed=777)
    assert all(p.count("### Instruction:") == 4 for p in first)
    assert len({p.split("### Instruction:\na")[0] for p in first}) == 3  # each example has its own shots
    assert inference_prompts(test, train, "causal", shots=0) == [causal_prompt(i) for i in "abc"]
    with pytest.raises(ValueError, match="causal"):
        inference_prompts(test, train, "seq2seq", shots=1)


def test_rag_prompts_hold_the_most_similar_training_examples_most_similar_last():
    train = pd.DataFrame(
        {
            "intent": [
                "sort list `l` in reverse order",
                "open file `f` for reading",
                "sort list `l`",
                "convert string `s` to integer",
                "reverse string `s`",
            ],
            "code": ["sorted(l, reverse=True)", "open(f)", "sorted(l)", "int(s)", "s[::-1]"],
        }
    )
    test = pd.DataFrame({"intent": ["sort list `items` in reverse order", "read file `path`"]})
    sort_prompt, file_prompt = inference_prompts(test, train, "causal", shots=2, retriever="bm25")
    assert sort_prompt == causal_prompt(
        test["intent"][0],
        [("sort list `l`", "sorted(l)"), ("sort list `l` in reverse order", "sorted(l, reverse=True)")],
    )
    assert file_prompt.count("### Instruction:") == 3
    # The only training intent sharing a word with the query comes last, next to it.
    assert file_prompt.split("### Instruction:\nread file")[0].endswith("open(f)\n\n")


def test_a_chat_formatted_example_masks_all_but_the_answer_and_its_end_of_turn(tokenizer):
    from peftcode.data.prompts import chat_style

    chat = chat_style(tokenizer)
    example = encode_example(tokenizer, "causal", "sort list `l`", "l.sort()", 128, 64, chat)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "sort list `l`"}], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer = tokenizer("l.sort()", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert example["input_ids"] == prompt_ids + answer
    # The loss covers exactly the answer and the token that ends the assistant's turn (<|im_end|>).
    assert [t for t in example["labels"] if t != IGNORE_INDEX] == answer
    assert example["labels"][: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert tokenizer.decode(answer[-1:]) == "<|im_end|>"
    # What the model sees after its training examples is what its chat template writes for that turn.
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": "sort list `l`"}, {"role": "assistant", "content": "l.sort()"}],
        tokenize=False,
    )
    assert full.startswith(tokenizer.decode(example["input_ids"]))


def test_chat_in_context_examples_are_earlier_turns_and_a_long_prompt_keeps_its_ending(tokenizer):
    from peftcode.data.prompts import chat_style, prompt_ids

    chat = chat_style(tokenizer)
    test = pd.DataFrame({"intent": ["reverse `s`"]})
    train = pd.DataFrame({"intent": ["sort `l`"], "code": ["l.sort()"]})
    (prompt,) = inference_prompts(test, train, "causal", shots=1, style=chat)
    assert prompt.count("<|im_start|>user\n") == 2 and "<|im_start|>assistant\nl.sort()<|im_end|>" in prompt
    assert prompt.endswith("reverse `s`<|im_end|>\n<|im_start|>assistant\n")
    assert chat.marker == "<|im_end|>\n<|im_start|>assistant\n"
    ids = prompt_ids(tokenizer, chat.render("word " * 200, ()), 40, chat.marker)
    assert len(ids) == 40 and tokenizer.decode(ids).endswith(chat.marker)
