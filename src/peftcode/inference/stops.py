"""Where a candidate ends: at a dataset's stop strings (a newline for CoNaLa), as a token id set that ends a
beam while searching, and as the cut of the decoded text."""

from __future__ import annotations

import torch
from transformers import StoppingCriteria


def stop_strings(stop: str | list[str] | None) -> list[str]:
    """A dataset's ``stop`` setting as a list: none, one text or several."""
    return [] if not stop else [stop] if isinstance(stop, str) else list(stop)


class StopTokens(StoppingCriteria):
    """Ends a beam whose newest token's text contains a stop string (a newline for CoNaLa).

    Beam search finishes such a beam as it does one that emits EOS. Checking the newest token id against a
    precomputed set costs one tensor lookup a step; listing those tokens as extra EOS ids instead would make
    beam search keep (1 + number of EOS ids) x beams candidates at every step.
    """

    def __init__(self, tokenizer, stop: str | list[str]):
        stops = stop_strings(stop)
        ids = [i for i in range(len(tokenizer)) if any(text in tokenizer.decode([i]) for text in stops)]
        self.stop_ids = torch.tensor(ids)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.isin(input_ids[:, -1], self.stop_ids.to(input_ids.device))


def cut_at_stop(text: str, stop: str | list[str] | None, prefix: str = "") -> str:
    """A candidate: the generated text up to the first stop string, after the ``prefix`` the prompt gave
    (then the text keeps its leading indentation, the body of the prefix's function say)."""
    text = text[: min((text.index(s) for s in stop_strings(stop) if s in text), default=len(text))]
    return prefix + text.rstrip() if prefix else text.strip()
