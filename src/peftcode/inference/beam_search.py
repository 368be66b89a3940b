"""Beam search over a batch of decoder-only prompts that spends compute only on examples still searching.

`generate` runs every example of a batch until the last one finishes, and computes each prompt once per
beam. This loop makes the same choices as transformers' vectorized beam search (the same top-2k
continuations, stopping, length penalty and early stopping, step by step), but computes each prompt once and
shares its keys and values with its beams (:class:`peftcode.inference.shared_prompt.Continuations`), and
drops an example from the batch, cache included, as soon as its finished hypotheses are final: at that point
`generate` run on the example alone would stop. The test `tests/inference/test_infer.py` and
`benchmarks/bench_inference.py` check that the candidates are the same.
"""

from __future__ import annotations

import torch

from peftcode.inference.shared_prompt import Continuations, prefill

MASKED = -1.0e9


def _gather(tensor: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``tensor[b, indices[b, j], ...]`` for every example b: the beams ``indices`` select."""
    while indices.dim() < tensor.dim():
        indices = indices.unsqueeze(-1)
    return torch.take_along_dim(tensor, indices, dim=1)


@torch.no_grad()
def beam_search(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    num_beams: int,
    num_return_sequences: int,
    max_new_tokens: int,
    eos_ids: list[int],
    stop_ids: torch.Tensor,
    length_penalty: float = 1.0,
    early_stopping: bool | str = True,
) -> list[list[list[int]]]:
    """The ``num_return_sequences`` best hypotheses of each left-padded prompt, best first, as the new token
    ids of each (the token that finished a hypothesis included). ``stop_ids`` end a hypothesis as the
    ``eos_ids`` do.
    """
    batch_size, prompt_length = input_ids.shape
    device = input_ids.device
    max_length = prompt_length + max_new_tokens
    # Candidates kept per step: enough that num_beams of them go on even if the others all end.
    keep = max(2, 1 + len(eos_ids)) * num_beams
    ends = torch.cat((torch.tensor(eos_ids, dtype=torch.long), stop_ids.long())).to(device)
    is_top_beam = torch.arange(keep, device=device) < num_beams

    cache, positions, logits = prefill(model, input_ids, attention_mask)
    # Every beam starts from the prompt: compute it once, then share it with the beams.
    continuations = Continuations(model, cache, attention_mask, num_beams, num_beams)
    logits = logits.repeat_interleave(num_beams, dim=0)
    last_position = positions[:, -1:].repeat_interleave(num_beams, dim=0)

    examples = list(range(batch_size))  # the prompt each block of num_beams rows searches
    running = input_ids.repeat_interleave(num_beams, dim=0).view(batch_size, num_beams, prompt_length)
    running_scores = torch.full((batch_size, num_beams), MASKED, device=device)
    running_scores[:, 0] = 0.0
    finished = torch.full((batch_size, num_beams, max_length), -1, dtype=torch.long, device=device)
    finished_scores = torch.full((batch_size, num_beams), MASKED, device=device)
    is_finished = torch.zeros((batch_size, num_beams), dtype=torch.bool, device=device)
    can_improve = torch.ones((batch_size, 1), dtype=torch.bool, device=device)
    results: list[list[list[int]]] = [[] for _ in range(batch_size)]

    with continuations.attending():
        for length in range(prompt_length, max_length):
            active = len(examples)
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            vocab = log_probs.shape[-1]
            log_probs = log_probs.view(active, num_beams, vocab) + running_scores[:, :, None]
            log_probs = log_probs.view(active, -1)
            top_scores, top_indices = torch.topk(log_probs, k=keep)
            source_beams = top_indices // vocab
            tokens = top_indices % vocab
            candidates = torch.cat((_gather(running, source_beams), tokens.unsqueeze(-1)), dim=-1)
            hits = torch.isin(tokens, ends) | (length + 1 >= max_length)

            # The best num_beams candidates that did not finish go on.
            open_scores = top_scores + hits.float() * MASKED
            going_on = torch.topk(open_scores, k=num_beams).indices
            running = _gather(candidates, going_on)
            running_scores = _gather(open_scores, going_on)

            # Finished candidates among the top num_beams join the finished hypotheses if they beat one.
            just_finished = hits & is_top_beam
            scores = top_scores / ((length + 1 - prompt_length) ** length_penalty)
            if early_stopping is True:
                scores = scores + is_finished.all(-1, keepdim=True).float() * MASKED
            scores = scores + (~can_improve).float() * MASKED + (~just_finished).float() * MASKED
            padded = torch.full((active, keep, max_length), -1, dtype=torch.long, device=device)
            padded[:, :, : length + 1] = candidates
            merged = torch.topk(torch.cat((finished_scores, scores), dim=1), k=num_beams).indices
            finished = _gather(torch.cat((finished, padded), dim=1), merged)
            finished_scores = _gather(torch.cat((finished_scores, scores), dim=1), merged)
            is_finished = _gather(torch.cat((is_finished, just_finished), dim=1), merged)

            hypothetical_length = (
                max_length if early_stopping == "never" and length_penalty > 0 else length + 1
            ) - prompt_length
            best_running = running_scores[:, :1] / (hypothetical_length**length_penalty)
            worst_finished = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True).values, MASKED)
            can_improve = can_improve & (best_running > worst_finished).any(dim=-1, keepdim=True)

            # Where generate, run on the example alone, would stop now.
            done = ~can_improve.squeeze(-1) | hits.all(dim=-1)
            if early_stopping is True:
                done |= is_finished.all(dim=-1)
            for row in done.nonzero().flatten().tolist():
                results[examples[row]] = [
                    [token for token in hypothesis[prompt_length:].tolist() if token >= 0]
                    for hypothesis in finished[row, :num_return_sequences]
                ]
            if done.all():
                break
            stays = (~done).nonzero().flatten()
            examples = [examples[row] for row in stays.tolist()]
            # Each surviving beam's cache is its source beam's, of surviving examples only.
            sources = _gather(source_beams, going_on)[stays] + (stays * num_beams).unsqueeze(-1)
            running, running_scores = running[stays], running_scores[stays]
            finished, finished_scores = finished[stays], finished_scores[stays]
            is_finished, can_improve = is_finished[stays], can_improve[stays]
            beams = torch.arange(num_beams, device=device)
            rows = (stays.unsqueeze(-1) * num_beams + beams).flatten()
            slots = (torch.tensor(examples, device=device).unsqueeze(-1) * num_beams + beams).flatten()
            continuations.go_on(sources.flatten(), slots)
            last_position = last_position[rows] + 1
            logits = model(
                input_ids=running[:, :, -1].reshape(-1, 1),
                position_ids=last_position,
                use_cache=True,
                **continuations.inputs(),
            ).logits[:, -1, :]
    return results
