import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    DynamicCache,
    Lfm2Config,
    Lfm2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

from peftcode.inference.shared_prompt import SharedPrompts, attending_to_shared_prompts, serves

CONFIG = {
    "vocab_size": 97, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
}  # fmt: skip


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@torch.no_grad()
def test_draws_reading_shared_prompts_see_what_copies_of_the_prompt_cache_show(dtype, tolerance):
    """Left-padded prompts of three lengths, grouped query heads, draws ending along the way: every step's
    logits are those of the model's own attention over a copy of the prompt's cache per draw."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**CONFIG)).to(dtype).eval()
    draws = 3
    lengths = [7, 3, 5]
    mask = torch.tensor([[0] * (7 - n) + [1] * n for n in lengths])
    ids = torch.randint(1, 97, mask.shape).masked_fill(mask == 0, 0)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    prompt_cache = DynamicCache(config=model.config)
    model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=prompt_cache, use_cache=True)

    copied = copy.deepcopy(prompt_cache)
    copied.batch_repeat_interleave(draws)
    slots = torch.arange(len(lengths) * draws)
    shared, own = SharedPrompts(prompt_cache, mask, draws, slots), DynamicCache(config=model.config)
    rows_mask = mask.repeat_interleave(draws, dim=0)
    position = positions[:, -1:].repeat_interleave(draws, dim=0)
    tokens = torch.randint(1, 97, (len(lengths) * draws,))
    # Step 2 drops a whole prompt's draws (rows 3-5) and one of another's.
    for stays in (None, None, torch.tensor([0, 2, 6, 7, 8]), None, torch.tensor([1, 3])):
        if stays is not None:
            for cache in (copied, own):
                cache.reorder_cache(stays)
            shared.move_to(shared.slots[stays])
            tokens, rows_mask, position = tokens[stays], rows_mask[stays], position[stays]
        rows_mask = torch.cat((rows_mask, rows_mask.new_ones(len(tokens), 1)), dim=-1)
        position = position + 1
        expected = model(
            input_ids=tokens[:, None], attention_mask=rows_mask, position_ids=position, cache=copied
        ).logits
        with attending_to_shared_prompts(model):
            got = model(
                input_ids=tokens[:, None], position_ids=position, cache=own, shared_prompts=shared
            ).logits
        assert torch.allclose(got.float(), expected.float(), atol=tolerance * expected.abs().max().item())
        tokens = expected[:, -1].argmax(-1)
    assert model.config._attn_implementation == "sdpa", "the model's own attention is back"


def test_shared_prompts_serve_decoders_attending_to_every_earlier_token():
    llama = LlamaForCausalLM(LlamaConfig(**CONFIG))
    assert serves(llama)
    assert serves(get_peft_model(llama, LoraConfig(r=2, target_modules=["q_proj"])))
    # A sliding window would hide early prompt tokens from late draws' steps, and a layer that is not
    # attention (LFM2's convolutions) keeps no keys: such models copy the cache.
    assert not serves(MistralForCausalLM(MistralConfig(**CONFIG, sliding_window=16)))
    hybrid = Lfm2Config(**CONFIG, layer_types=["conv", "full_attention"])
    assert not serves(Lfm2ForCausalLM(hybrid))
