"""The inference recipe: one cell's model (plus adapter) and test split -> the top-k beam-search candidates
of every test example, batched across examples."""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from peft import PeftModel, PeftType
from tqdm import tqdm
from transformers import StoppingCriteriaList

from peftcode.data.prompts import inference_prompts, prompt_ids, prompt_style
from peftcode.data.retrieval import nearest
from peftcode.data.splits import read_split
from peftcode.hardware.memory import JobMeter, parameter_counts, weight_footprint_mb
from peftcode.hardware.placement import job_device
from peftcode.hardware.precision import Precision
from peftcode.hardware.precision import resolve as resolve_precision
from peftcode.inference.beam_search import beam_search
from peftcode.inference.resume_store import Progress, generation_key
from peftcode.inference.sampling import sample
from peftcode.inference.stops import StopTokens, cut_at_stop
from peftcode.models.adapters import adapter_location, check_base_weights
from peftcode.models.checkpoints import is_8bit, load_checkpoint, model_commit
from peftcode.models.probe import PROBE_FILE, probe_agreement
from peftcode.study.kinds import MERGEABLE_PEFT_TYPES
from peftcode.study.settings import InferSettings

# Merging an adapter moves a near-tie's top-1 at most; a broken load moves most of them.
MIN_PROBE_AGREEMENT = 0.9


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
    eos = model.generation_config.eos_token_id
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def conditioned_inputs(model, batch: dict, family: str, beams: int = 1) -> tuple[object, dict]:
    """The model and inputs to call ``generate`` with, so that soft prompts condition every step.

    PEFT's own ``generate`` for prompt and prefix tuning drops them after the first step with the
    transformers release we pin (the cache is not carried, so later steps see the virtual tokens and the
    newest token only). We hand the base model the same conditioning as training does instead: virtual
    token embeddings in front of the prompt's, or the prefix as the key/value cache it starts from.
    """
    if not isinstance(model, PeftModel) or family != "causal":
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


def load_for_inference(
    model_dir: str | Path,
    adapter_dir: str | Path | None,
    family: str,
    dtype: torch.dtype = torch.float32,
    gpus: int = 1,
    gpu_memory_gb: float | None = None,
):
    """The model to generate with, its weights in ``dtype``; adapters that merge (LoRA, IA3 and the like,
    ``kinds.MERGEABLE_PEFT_TYPES``) are merged into them,
    which computes the same function without the adapters' extra matrix products at every step. A QLoRA
    adapter stays apart from its quantized base, as in training: merging would re-quantize the merged
    weights."""
    model, tokenizer = load_checkpoint(model_dir, family, dtype, gpus, gpu_memory_gb)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
        quantized = getattr(model.get_base_model(), "is_quantized", False)
        if model.peft_config["default"].peft_type.value in MERGEABLE_PEFT_TYPES and not quantized:
            model = model.merge_and_unload()
    model.eval()
    return model, tokenizer


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
    if family != "causal" or reshapes_scores(model.generation_config):
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


def _generate(
    model,
    tokenizer,
    prompts: list[str],
    prefixes: list[str],
    settings: InferSettings,
    sampling: dict | None,
    first_index: int,
) -> list[list[str]]:
    family, shots = settings.family, settings.shots
    limit = settings.max_input_length if not shots else None
    if family == "seq2seq":
        if any(prefixes):
            raise ValueError("a dataset's prefix (the start of the code in the prompt) needs a causal model")
        encoded = [tokenizer(p, max_length=limit, truncation=True)["input_ids"] for p in prompts]
    else:
        style = prompt_style(settings.prompt, tokenizer)
        # A prompt cut to its limit keeps the marker and the prefix, which the model continues.
        encoded = [
            prompt_ids(tokenizer, p + f, limit, style.marker + f, style.special_tokens)
            for p, f in zip(prompts, prefixes, strict=True)
        ]
    tokenizer.padding_side = "left"
    search = search_settings(settings, sampling)
    returns = search["num_return_sequences"]
    stop_criteria = [StopTokens(tokenizer, settings.stop)] if settings.stop else []
    stopping = StoppingCriteriaList(stop_criteria)
    stop_ids = stop_criteria[0].stop_ids if stop_criteria else torch.tensor([], dtype=torch.long)
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    candidates: list[list[str]] = [[] for _ in prompts]
    batch_size = generation_batch_size(model, settings, sampling)
    ours = searches_itself(model, family)
    for start in tqdm(range(0, len(order), batch_size), desc="generate", mininterval=5):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt").to(model.device)
        # generate() repeats each row once per beam, or once per returned sample.
        generator, inputs = conditioned_inputs(model, batch, family, max(search["num_beams"], returns))
        if ours and sampling is not None:
            ends = torch.cat((torch.tensor(eos_ids(generator), dtype=torch.long), stop_ids.long()))
            draw = partial(
                sample,
                generator,
                **inputs,
                prompt_indices=[first_index + row for row in rows],
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
            new_tokens = [tokens for row in draws for tokens in row]
        elif ours:
            hypotheses = beam_search(
                generator,
                **inputs,
                num_beams=search["num_beams"],
                num_return_sequences=returns,
                max_new_tokens=settings.max_new_tokens,
                eos_ids=eos_ids(generator),
                stop_ids=stop_ids,
                length_penalty=generator.generation_config.length_penalty or 1.0,
                early_stopping=search["early_stopping"],
            )
            new_tokens = [tokens for row in hypotheses for tokens in row]
        else:
            if sampling is not None:
                # Each prompt's draws come from a seed of its own, whatever was drawn before it.
                torch.manual_seed(settings.seed + first_index + rows[0])
            output = generator.generate(
                **inputs,
                **search,
                max_new_tokens=settings.max_new_tokens,
                stopping_criteria=stopping,
                pad_token_id=tokenizer.pad_token_id,
            )
            # Encoder-decoder models and generation from embeddings return the new tokens only.
            returns_prompt = family == "causal" and "input_ids" in inputs
            new_tokens = output[:, batch["input_ids"].shape[1] :] if returns_prompt else output
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for offset, row in enumerate(rows):
            candidates[row] = [
                cut_at_stop(t, settings.stop, prefixes[row])
                for t in texts[offset * returns : (offset + 1) * returns]
            ]
    return candidates


def infer(
    model_dir: str | Path,
    adapter_dir: str | Path | None,
    data_dir: str | Path,
    out_path: str | Path,
    memory_path: str | Path,
    settings: InferSettings,
    threads: int | None = None,
    gpus: int = 1,
    gpu_memory_gb: float | None = None,
    embeddings_path: str | Path | None = None,
    resume_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Generate candidates for one cell's test split on the job's device (or spread over its ``gpus``);
    writes them as parquet with the job's memory record. Finished examples are kept in ``resume_dir`` as
    they go, for a rerun to resume from (:mod:`peftcode.inference.resume_store`)."""
    meter = JobMeter()
    if threads:
        torch.set_num_threads(threads)
    precision = resolve_precision(settings.precision, job_device())
    adapter = adapter_location(adapter_dir) if adapter_dir else None
    if adapter:
        check_base_weights(adapter_dir, model_dir)
    model, tokenizer = load_for_inference(
        model_dir, adapter, settings.family, precision.dtype, gpus, gpu_memory_gb
    )
    checkpoint_dir = adapter or Path(model_dir)
    agreement = probe_agreement(model, checkpoint_dir, precision)
    if agreement is not None and agreement < MIN_PROBE_AGREEMENT:
        raise RuntimeError(
            f"{checkpoint_dir}: the loaded model reproduces only {agreement:.0%} of the fine-tune's top-1 "
            f"predictions on its probe example ({PROBE_FILE}); the checkpoint did not load as trained"
        )
    test = read_split(data_dir, "test")
    prompts = inference_prompts(
        test,
        read_split(data_dir, "train") if settings.shots else None,
        settings.family,
        settings.shots,
        settings.seed,
        settings.retriever,
        prompt_style(settings.prompt, tokenizer),
        nearest(embeddings_path, settings.shots) if embeddings_path else None,
    )
    prefixes = list(test["prefix"])
    splits = [Path(data_dir) / f"{split}.parquet" for split in ("test", "train")[: 1 + bool(settings.shots)]]
    inputs = [model_dir, adapter, *splits, embeddings_path]
    progress = Progress(resume_dir, generation_key(settings.as_dict(), inputs, precision.name, model))

    def generated(stage: str, sampling: dict | None) -> list[list[str]]:
        return progress.generated(
            stage,
            len(prompts),
            lambda first, last: generate_candidates(
                model,
                tokenizer,
                prompts[first:last],
                settings,
                sampling,
                precision,
                prefixes[first:last],
                first,
            ),
            settings.batch_size,
        )

    candidates = generated("candidates", None)
    generation_time = progress.seconds["candidates"]  # this run's chunks and any resumed ones
    candidate_tokens = sum(
        len(tokenizer(c[len(prefix) :])["input_ids"])
        for row, prefix in zip(candidates, prefixes, strict=True)
        for c in row
    )
    generations = pd.DataFrame(
        {
            "id": test["id"],
            "source_id": test["source_id"],
            "intent": test["intent"],
            "reference": test["code"],
            "prompt": [prompt + prefix for prompt, prefix in zip(prompts, prefixes, strict=True)],
            "candidates": candidates,
        }
    )
    sampling = settings.sampling
    if sampling:
        # Draws for pass@k, on problems that carry tests; a greedy draw is the greedy candidate, where the
        # search is greedy too.
        if sampling["temperature"] == 0 and settings.num_beams == 1:
            generations["samples"] = [row[:1] for row in candidates]
        else:
            generations["samples"] = generated("samples", sampling)
        generations["tests"] = test["tests"]
        generations["difficulty"] = test["difficulty"]
    generations.to_parquet(out_path, index=False)
    meter.write(
        memory_path,
        job="infer",
        **parameter_counts(model),
        weight_footprint_mb=weight_footprint_mb(model),
        precision=precision.name,
        devices=sorted({str(p.device) for p in model.parameters()}),
        model_commit=model_commit(model_dir),
        quantization_bits=(settings.quantization or {}).get("bits"),
        checkpoint_probe_agreement=agreement,
        examples=len(test),
        resumed_examples=progress.resumed["candidates"],
        examples_per_s=round(len(test) / generation_time, 3),
        candidate_tokens=candidate_tokens,
        tokens_per_s=round(candidate_tokens / generation_time, 1),
    )
    progress.finish()
    return generations
