"""Sampled programs for pass@k, drawn for many prompts at once, each draw from a random stream of its own.

A batch computes each prompt once, and its draws attend to its keys and values
(:mod:`peftcode.inference.shared_prompt`). Draws of a prompt that have drawn the same tokens so far share one
row of the batch (the same tokens give the same next-token distribution), and split into rows of their own as
they draw different tokens: at a low temperature most of a prompt's draws agree for most of their tokens,
and each step computes the distinct ones only. A draw leaves the batch once it ends (at EOS or the stop
text). Each draw has its own generator, seeded from the cell's seed, the prompt's index and the draw's
index, from which it takes one uniform number a step and picks the token whose cumulative probability
first reaches it (inverse-CDF sampling, after temperature and top-p): its tokens depend on nothing else in
the batch, so a batch draws what one prompt and one draw at a time would (tested), at a fraction of the
cost.
"""

from __future__ import annotations

import torch

from peftcode.inference import shared_prompt


def draw_seed(seed: int, prompt: int, draw: int) -> int:
    """The seed of one draw's generator."""
    return (seed * 1_000_003 + prompt * 10_007 + draw) % (2**63)


# Most of a step's sampling cost was sorting the whole vocabulary; the top-p set is almost always among the
# most likely few hundred tokens, so those are sorted first and a row sorts everything only where they fall
# short of top_p.
CANDIDATES = 256


def top_p_order(probabilities: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's probabilities in descending order with their token ids, at least as far as the smallest
    set that reaches ``top_p`` (the most likely ``CANDIDATES`` where they reach it, else the whole row)."""
    if probabilities.shape[-1] <= CANDIDATES:
        return probabilities.sort(dim=-1, descending=True)
    ranked, order = probabilities.topk(CANDIDATES, dim=-1)
    short = (ranked.sum(-1) < top_p).nonzero().flatten()
    if len(short) == 0:
        return ranked, order
    whole, whole_order = probabilities[short].sort(dim=-1, descending=True)
    padding = probabilities.shape[-1] - CANDIDATES
    ranked = torch.nn.functional.pad(ranked, (0, padding))
    order = torch.nn.functional.pad(order, (0, padding))
    ranked[short], order[short] = whole, whole_order
    return ranked, order


def next_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    uniforms: torch.Tensor,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token per uniform number, from row ``rows[i]`` of ``logits`` for number ``i`` (row ``i`` by
    default): the smallest set of most likely tokens whose probability reaches ``top_p``, at
    ``temperature``, sampled with the number; ``temperature`` 0 takes the most likely."""
    if temperature == 0:
        best = logits.argmax(-1)
        return best if rows is None else best[rows]
    probabilities = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_probabilities, order = top_p_order(probabilities, top_p)
    cumulative = sorted_probabilities.cumsum(-1)
    # A token stays while the tokens more likely than it hold less than top_p (the first always stays).
    kept = torch.where(cumulative - sorted_probabilities < top_p, sorted_probabilities, 0.0)
    kept_cumulative = kept.cumsum(-1)
    if rows is not None:
        kept_cumulative, order = kept_cumulative[rows], order[rows]
    threshold = uniforms.unsqueeze(-1) * kept_cumulative[:, -1:]
    picked = torch.searchsorted(kept_cumulative, threshold, right=True).clamp(max=kept.shape[-1] - 1)
    return order.gather(-1, picked).squeeze(-1)


@torch.no_grad()
def sample(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_indices: list[int],
    draws: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    end_ids: torch.Tensor,
    first_draw: int = 0,
) -> list[list[list[int]]]:
    """``draws`` samples of each left-padded prompt (``prompt_indices`` name them for their seeds, the
    draws counting from ``first_draw``), as the new token ids of each, the token that ended a draw
    included."""
    prompts = input_ids.shape[0]
    device = input_ids.device
    cache, positions, logits = shared_prompt.prefill(model, input_ids, attention_mask)
    # Each prompt computed once, a row for all its draws to begin with.
    prompt_of_draw = torch.arange(prompts, device=device).repeat_interleave(draws)
    continuations = shared_prompt.Continuations(model, cache, attention_mask, draws, rows_per_prompt=1)
    generators = [
        torch.Generator().manual_seed(draw_seed(seed, prompt_indices[row // draws], first_draw + row % draws))
        for row in range(prompts * draws)
    ]
    live = torch.arange(prompts * draws, device=device)  # the draws still drawing
    row_of_draw = prompt_of_draw  # the row of the batch each live draw reads
    last_position = positions[:, -1:]
    tokens: list[list[int]] = [[] for _ in range(prompts * draws)]
    end_ids = end_ids.to(device)
    with continuations.attending():
        for step in range(max_new_tokens):
            uniforms = torch.cat([torch.rand(1, generator=generators[draw]) for draw in live.tolist()])
            chosen = next_tokens(logits, temperature, top_p, uniforms.to(device), rows=row_of_draw)
            for draw, token in zip(live.tolist(), chosen.tolist(), strict=True):
                tokens[draw].append(token)
            going_on = ~torch.isin(chosen, end_ids)
            if not going_on.any() or step == max_new_tokens - 1:
                break
            live, row_of_draw, chosen = live[going_on], row_of_draw[going_on], chosen[going_on]
            # The next step's rows: one for each row and token drawn from it; each takes the slot of its
            # first draw (live draws are in order, so a row's draws are too).
            paths, row_of_draw = torch.unique(row_of_draw * logits.shape[-1] + chosen, return_inverse=True)
            sources, next_token = paths // logits.shape[-1], paths % logits.shape[-1]
            first = torch.full((len(paths),), len(live), device=device).scatter_reduce(
                0, row_of_draw, torch.arange(len(live), device=device), "amin"
            )
            continuations.go_on(sources, live[first])
            last_position = last_position[sources] + 1
            logits = model(
                input_ids=next_token.unsqueeze(-1),
                position_ids=last_position,
                use_cache=True,
                **continuations.inputs(),
            ).logits[:, -1, :]
    return [tokens[prompt * draws : (prompt + 1) * draws] for prompt in range(prompts)]
