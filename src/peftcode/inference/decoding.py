"""Decoding a batch of prompts: our batched beam search and sampler where they serve the model (a decoder
reading plain prompts), transformers' ``generate`` for the rest (soft prompts, encoder-decoders, score
shaping); each prompt's candidates cut at its stop sequences."""

from __future__ import annotations

import contextlib
from functools import partial

import torch
from peft import PeftModel, PeftType
from tqdm import tqdm
from transformers import StoppingCriteriaList

from peftcode.data.prompts import prompt_ids, prompt_style
from peftcode.hardware.precision import Precision
from peftcode.inference.beam_search import beam_search
from peftcode.inference.sampling import sample
from peftcode.inference.stops import StopTokens, cut_at_stop
from peftcode.models.checkpoints import is_8bit
from peftcode.study.families import is_encoder_decoder
from peftcode.study.settings import InferSettings

# Generation-config settings with which `generate` reshapes the scores at every step, and their values that
# leave them as they are; beam_search does no such reshaping, so a model that sets one goes to `generate`.
SCORE_SHAPING = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "min_length": 0,
    "min_new_tokens": 0,
    "bad_words_ids": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
    "renormalize_logits": False,
    "remove_invalid_values": False,
}


def reshapes_scores(generation_config) -> bool:
    return any(
        getattr(generation_config, name, None) not in (None, neutral)
        for name, neutral in SCORE_SHAPING.items()
    )


def eos_ids(model) -> list[int]:
    """The token ids that end a hypothesis, as ``generate`` reads them from the model's generation config."""
    return end_ids(model.generation_config)


def end_ids(generation_config) -> list[int]:
    eos = generation_config.eos_token_id
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def conditioned_inputs(model, batch: dict, family: str, beams: int = 1) -> tuple[object, dict]:
    """The model and inputs to call ``generate`` with, so that soft prompts condition every step.

    PEFT's own ``generate`` for prompt and prefix tuning drops them after the first step with the
    transformers release we pin (the cache is not carried, so later steps see the virtual tokens and the
    newest token only). We hand the base model the same conditioning as training does instead: virtual
    token embeddings in front of the prompt's, or the prefix as the key/value cache it starts from.
    """
    if not isinstance(model, PeftModel) or is_encoder_decoder(family):
        return model, batch
    config = model.peft_config["default"]
    if config.peft_type not in (PeftType.PROMPT_TUNING, PeftType.PREFIX_TUNING):
        return model, batch
    rows = batch["input_ids"].shape[0]
    mask = batch["attention_mask"]
    virtual = torch.ones(rows, config.num_virtual_tokens, dtype=mask.dtype, device=mask.device)
    attention = torch.cat([virtual, mask], dim=1)
    base = model.get_base_model()
    if config.peft_type == PeftType.PROMPT_TUNING:
        embeddings = base.get_input_embeddings()(batch["input_ids"])
        prompts = model.get_prompt(batch_size=rows).to(embeddings.dtype)
        return base, {"inputs_embeds": torch.cat([prompts, embeddings], dim=1), "attention_mask": attention}
    # generate() repeats each row once per beam but leaves a given cache as it is: build it per beam.
    prefix = model.get_prompt(batch_size=rows * beams)
    return base, {"input_ids": batch["input_ids"], "attention_mask": attention, "past_key_values": prefix}


def search_settings(settings: InferSettings, sampling: dict | None = None) -> dict:
    """``generate``'s decoding arguments: the cell's beam search, or ``sampling`` for pass@k."""
    if sampling is None:
        return {
            "do_sample": False,
            "num_beams": settings.num_beams,
            "num_return_sequences": min(settings.num_return_sequences, settings.num_beams),
            "early_stopping": settings.early_stopping,
        }
    if sampling["temperature"] == 0:  # greedy: one draw, the most likely token at each step
        return {"do_sample": False, "num_beams": 1, "num_return_sequences": 1}
    return {
        "do_sample": True,
        "num_beams": 1,
        "num_return_sequences": sampling["samples"],
        "temperature": sampling["temperature"],
        "top_p": sampling["top_p"],
    }


def searches_itself(model, family: str) -> bool:
    """Whether our own beam search and sampler serve the model: a decoder reading plain prompts whose
    generation config reshapes no scores. Soft prompts, encoder-decoders and score shaping go to
    ``generate``."""
    if is_encoder_decoder(family) or reshapes_scores(model.generation_config):
        return False
    if isinstance(model, PeftModel):
        return model.peft_config["default"].peft_type not in (PeftType.PROMPT_TUNING, PeftType.PREFIX_TUNING)
    return True


def generation_batch_size(model, settings: InferSettings, sampling: dict | None) -> int:
    """Prompts per batch: one where a prompt's candidates would otherwise depend on the prompts batched with
    it. bitsandbytes' 8-bit matrix product (LLM.int8) picks its outlier columns over the whole batch; and
    ``generate`` draws samples from one random stream across its batch (our sampler gives each draw its
    own)."""
    if is_8bit(model) or (sampling is not None and not searches_itself(model, settings.family)):
        return 1
    return settings.batch_size


@torch.no_grad()
def generate_candidates(
    model,
    tokenizer,
    prompts: list[str],
    settings: InferSettings,
    sampling: dict | None = None,
    precision: Precision | None = None,
    prefixes: list[str] | None = None,
    first_index: int = 0,
) -> list[list[str]]:
    """Candidates per prompt: beam search's best first, or ``sampling``'s draws, computed under the
    precision's autocast (none by default). A prompt's prefix (the start of its code, see
    :mod:`peftcode.data.prepare_data`) ends the prompt and begins each of its candidates. Prompts are batched
    longest
    first to limit padding; ``first_index`` is the first prompt's index in the test set, which its draws'
    seeds name."""
    prefixes = prefixes or [""] * len(prompts)
    with precision.autocast() if precision else contextlib.nullcontext():
        return _generate(model, tokenizer, prompts, prefixes, settings, sampling, first_index)


def encode_prompts(
    tokenizer, prompts: list[str], prefixes: list[str], settings: InferSettings
) -> list[list[int]]:
    """Each prompt's token ids, cut to the input limit (none with in-context examples); a causal prompt
    cut to its limit keeps the marker and the prefix, which the model continues."""
    limit = settings.max_input_length if not settings.shots else None
    if is_encoder_decoder(settings.family):
        if any(prefixes):
            raise ValueError("a dataset's prefix (the start of the code in the prompt) needs a causal model")
        return [tokenizer(p, max_length=limit, truncation=True)["input_ids"] for p in prompts]
    style = prompt_style(settings.prompt, tokenizer)
    return [
        prompt_ids(tokenizer, p + f, limit, style.marker + f, style.special_tokens)
        for p, f in zip(prompts, prefixes, strict=True)
    ]


def _generate(
    model,
    tokenizer,
    prompts: list[str],
    prefixes: list[str],
    settings: InferSettings,
    sampling: dict | None,
    first_index: int,
) -> list[list[str]]:
    encoded = encode_prompts(tokenizer, prompts, prefixes, settings)
    tokenizer.padding_side = "left"
    search = search_settings(settings, sampling)
    returns = search["num_return_sequences"]
    stops = StopTokens(tokenizer, settings.stop) if settings.stop else None
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    candidates: list[list[str]] = [[] for _ in prompts]
    batch_size = generation_batch_size(model, settings, sampling)
    ours = searches_itself(model, settings.family)
    for start in tqdm(range(0, len(order), batch_size), desc="generate", mininterval=5):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt").to(model.device)
        # generate() repeats each row once per beam, or once per returned sample.
        generator, inputs = conditioned_inputs(
            model, batch, settings.family, max(search["num_beams"], returns)
        )
        if ours and sampling is not None:
            draws = [first_index + row for row in rows]
            new_tokens = sample_ours(model, generator, inputs, settings, sampling, draws, returns, stops)
        elif ours:
            new_tokens = beam_search_ours(generator, inputs, settings, search, stops)
        else:
            # Sampled draws of a prompt come from a seed of its own, whatever was drawn before it.
            seed = settings.seed + first_index + rows[0] if sampling is not None else None
            new_tokens = generate_theirs(generator, inputs, batch, tokenizer, settings, search, stops, seed)
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for offset, row in enumerate(rows):
            candidates[row] = [
                cut_at_stop(t, settings.stop, prefixes[row])
                for t in texts[offset * returns : (offset + 1) * returns]
            ]
    return candidates


def _stop_ids(stops: StopTokens | None) -> torch.Tensor:
    return stops.stop_ids if stops else torch.tensor([], dtype=torch.long)


def sample_ours(
    model,
    generator,
    inputs: dict,
    settings: InferSettings,
    sampling: dict,
    prompt_indices,
    returns: int,
    stops,
) -> list:
    """Our sampler's draws, each from a random stream named by its prompt's index and its own number."""
    ends = torch.cat((torch.tensor(eos_ids(generator), dtype=torch.long), _stop_ids(stops).long()))
    draw = partial(
        sample,
        generator,
        **inputs,
        prompt_indices=prompt_indices,
        max_new_tokens=settings.max_new_tokens,
        temperature=sampling["temperature"],
        top_p=sampling["top_p"],
        seed=settings.seed,
        end_ids=ends,
    )
    if is_8bit(model):  # one draw at a time too: LLM.int8 would see the others
        draws = [[d for j in range(returns) for d in draw(draws=1, first_draw=j)[0]]]
    else:
        draws = draw(draws=returns)
    return [tokens for row in draws for tokens in row]


def beam_search_ours(generator, inputs: dict, settings: InferSettings, search: dict, stops) -> list:
    """Our batched beam search's hypotheses, best first for each prompt."""
    hypotheses = beam_search(
        generator,
        **inputs,
        num_beams=search["num_beams"],
        num_return_sequences=search["num_return_sequences"],
        max_new_tokens=settings.max_new_tokens,
        eos_ids=eos_ids(generator),
        stop_ids=_stop_ids(stops),
        length_penalty=generator.generation_config.length_penalty or 1.0,
        early_stopping=search["early_stopping"],
    )
    return [tokens for row in hypotheses for tokens in row]


def generate_theirs(
    generator, inputs: dict, batch, tokenizer, settings: InferSettings, search: dict, stops, seed: int | None
) -> list:
    """transformers' ``generate``, for what our decoder does not serve, from ``seed`` where it is given."""
    if seed is not None:
        torch.manual_seed(seed)
    output = generator.generate(
        **inputs,
        **search,
        max_new_tokens=settings.max_new_tokens,
        stopping_criteria=StoppingCriteriaList([stops] if stops else []),
        pad_token_id=tokenizer.pad_token_id,
    )
    # Encoder-decoder models and generation from embeddings return the new tokens only.
    returns_prompt = not is_encoder_decoder(settings.family) and "input_ids" in inputs
    return output[:, batch["input_ids"].shape[1] :] if returns_prompt else output
