"""Attention for many draws of the same prompts, each prompt's keys and values held once.

Copying a prompt's cache to each of its draws made the sampler's every step read and rewrite those copies:
twenty draws of a HumanEval prompt hold twenty copies of its few hundred tokens' keys and values, against a
hundred and twenty-eight tokens of their own at most. Here the draws keep only the keys and values of what
they generated (a cache of their own, in the model's usual cache), and each layer's attention reads the
prompt's from the one copy computed for it, its padding masked. The attention is the same softmax over the
prompt's keys and the draw's own, computed in two parts.

Used where the model dispatches its attention through transformers' attention interface (Llama and most
current decoders): :func:`attending_to_shared_prompts` swaps it in for the draws' steps. Elsewhere each
continuation gets a copy of its prompt's cache. :class:`Continuations` does either for the sampler's draws
and the beam search's beams.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import DynamicLayer

from peftcode.models.checkpoints import is_8bit

NAME = "peftcode_shared_prompt"


class SharedPrompts:
    """The prompts' keys and values per layer, their padding, and the slot of each row of the batch.

    Each prompt has ``per_prompt`` slots (prompt ``p``'s are ``p * per_prompt`` and on), and each row of
    the batch holds one of them, no two rows the same: the row continues the slot's prompt. A model spread
    over several devices reads the slots and padding on each layer's device."""

    def __init__(
        self, cache: DynamicCache, attention_mask: torch.Tensor, per_prompt: int, slots: torch.Tensor
    ):
        self.keys = [layer.keys for layer in cache.layers]
        self.values = [layer.values for layer in cache.layers]
        self.prompts = attention_mask.shape[0]
        self.per_prompt = per_prompt
        padding = torch.zeros(attention_mask.shape, dtype=torch.float32, device=attention_mask.device)
        self.padding = padding.masked_fill(attention_mask == 0, float("-inf"))
        self.move_to(slots)

    def move_to(self, slots: torch.Tensor) -> None:
        """The rows' slots from the next step on."""
        self.slots = slots
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows' slots, and each row's prompt padding ``[rows, 1, 1, prompt length]``."""
        if device not in self._on_device:
            slots = self.slots.to(device)
            padding = self.padding.to(device)[slots // self.per_prompt][:, None, None, :]
            self._on_device[device] = slots, padding
        return self._on_device[device]

    def to_prompts(self, per_row: torch.Tensor) -> torch.Tensor:
        """``[rows, kv_heads, groups, n]`` to ``[prompts, kv_heads, per_prompt * groups, n]``, empty slots
        zero, so that one batched product per prompt serves all its rows."""
        _, kv_heads, groups, n = per_row.shape
        padded = per_row.new_zeros(self.prompts * self.per_prompt, kv_heads, groups, n)
        padded[self.on(per_row.device)[0]] = per_row
        padded = padded.view(self.prompts, self.per_prompt, kv_heads, groups, n).transpose(1, 2)
        return padded.reshape(self.prompts, kv_heads, self.per_prompt * groups, n)

    def to_rows(self, per_prompt: torch.Tensor, groups: int) -> torch.Tensor:
        """The inverse of :meth:`to_prompts`, for the rows."""
        _, kv_heads, _, n = per_prompt.shape
        per_slot = per_prompt.view(self.prompts, kv_heads, self.per_prompt, groups, n).transpose(1, 2)
        slots = self.on(per_prompt.device)[0]
        return per_slot.reshape(self.prompts * self.per_prompt, kv_heads, groups, n)[slots]


# What a model's attention module may pass that this attention does not do: it refuses, rather than attend
# otherwise than the model would.
UNSUPPORTED = ("sliding_window", "softcap", "s_aux", "sinks", "position_bias")


def shared_prompt_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    shared_prompts: SharedPrompts | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """One new token per row: ``query`` ``[rows, heads, 1, head_dim]`` attends to its prompt's keys and to
    ``key``, the draw's own (its new token's included). Returns ``[rows, 1, heads, head_dim]``."""
    if shared_prompts is None or query.shape[2] != 1:
        raise ValueError(f"{NAME} attention serves one new token per draw, given the prompts' keys")
    unsupported = [name for name in UNSUPPORTED if kwargs.get(name) is not None]
    if unsupported:
        raise ValueError(f"{NAME} attention does not apply {', '.join(unsupported)}")
    rows, heads, _, head_dim = query.shape
    layer = module.layer_idx
    prompt_keys, prompt_values = shared_prompts.keys[layer], shared_prompts.values[layer]
    kv_heads = prompt_keys.shape[1]
    groups = heads // kv_heads
    # Query head h reads key head h // groups, as in transformers' repeat_kv.
    query = query.reshape(rows, kv_heads, groups, head_dim) * scaling
    prompt_scores = (
        shared_prompts.to_rows(shared_prompts.to_prompts(query) @ prompt_keys.transpose(-1, -2), groups)
        + shared_prompts.on(query.device)[1]
    )
    own_scores = query @ key.transpose(-1, -2)
    weights = torch.cat((prompt_scores, own_scores), dim=-1).float().softmax(dim=-1).to(value.dtype)
    prompt_weights, own_weights = weights.split([prompt_keys.shape[2], key.shape[2]], dim=-1)
    output = shared_prompts.to_rows(shared_prompts.to_prompts(prompt_weights) @ prompt_values, groups)
    output = output + own_weights @ value
    return output.reshape(rows, 1, heads, head_dim), None


AttentionInterface.register(NAME, shared_prompt_attention)


def serves(model) -> bool:
    """Whether the model's attention goes through transformers' attention interface, in every layer over
    every earlier token (a cache of full-attention layers only: no sliding window, chunks or linear
    attention) and without capping its scores; and its linear layers are not LLM.int8's, whose outlier
    columns would turn this attention's rounding (within 1e-6 of the copies') into other beams than
    ``generate``'s."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config.get_text_config(decoder=True)
    return (
        not is_8bit(base)
        and bool(getattr(base, "_supports_attention_backend", False))
        and all(
            getattr(config, name, None) is None
            for name in ("sliding_window", "attention_chunk_size", "attn_logit_softcapping")
        )
        and all(type(layer) is DynamicLayer for layer in DynamicCache(config=base.config).layers)
    )


@contextlib.contextmanager
def attending_to_shared_prompts(model):
    """The model's attention is :func:`shared_prompt_attention` within, its own after."""
    config = model.config.get_text_config(decoder=True)
    own = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = own


def prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """The prompts' one forward pass, which every beam or draw continues: its cache, the prompts'
    positions (left padding skipped) and the next token's logits."""
    cache = DynamicCache(config=model.config)
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1, :]
    return cache, positions, logits


class Continuations:
    """The caches from which the continuations of each prompt (beams, draws) go on, a row each, up to
    ``per_prompt`` of them a prompt: the prompt's keys and values shared where the model lets them be
    (:func:`serves`), else a copy of them in each row's cache. There are ``rows_per_prompt`` to begin with;
    each step says which row each next row continues (:meth:`go_on`)."""

    def __init__(
        self,
        model,
        cache: DynamicCache,
        attention_mask: torch.Tensor,
        per_prompt: int,
        rows_per_prompt: int,
    ):
        self.model = model
        prompts = attention_mask.shape[0]
        if serves(model):
            first = torch.arange(prompts, device=attention_mask.device)[:, None] * per_prompt
            slots = (first + torch.arange(rows_per_prompt, device=attention_mask.device)).flatten()
            self.shared = SharedPrompts(cache, attention_mask, per_prompt, slots)
            self.cache = DynamicCache(config=model.config)
        else:
            self.shared = None
            cache.batch_repeat_interleave(rows_per_prompt)
            self.cache = cache
            self.attention_mask = attention_mask.repeat_interleave(rows_per_prompt, dim=0)

    def attending(self) -> contextlib.AbstractContextManager:
        """Where the continuations' steps run: with the shared prompts' attention if they share them."""
        return attending_to_shared_prompts(self.model) if self.shared else contextlib.nullcontext()

    def go_on(self, sources: torch.Tensor, slots: torch.Tensor) -> None:
        """The next step's rows: row ``i`` continues row ``sources[i]`` of this step (its cache, its
        prompt) in slot ``slots[i]`` of that prompt, no two rows in the same slot."""
        self.cache.reorder_cache(sources)
        if self.shared is not None:
            self.shared.move_to(slots)
        else:
            self.attention_mask = self.attention_mask[sources]

    def inputs(self) -> dict:
        """The model's cache arguments for the next token of each row."""
        if self.shared is not None:
            return {"cache": self.cache, "shared_prompts": self.shared}
        mask = self.attention_mask
        self.attention_mask = torch.cat((mask, mask.new_ones((len(mask), 1))), dim=-1)
        return {"cache": self.cache, "attention_mask": self.attention_mask}
