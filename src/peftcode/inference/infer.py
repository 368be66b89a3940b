"""The inference recipe: one cell's model (plus adapter) and test split -> its generations: the top-k
beam-search candidates of every test example and, for a test set with tests, the sampled programs of
pass@k; with the job's cost record.

In phases: :func:`load_model` (the model, its adapter merged where it merges, checked against the
fine-tune's probe), :func:`build_prompts` (zero-shot, in-context or retrieved examples), the candidates and
samples decoded in resumable chunks (:mod:`peftcode.inference.decoding`,
:mod:`peftcode.inference.resume_store`), and :func:`write_record`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from peft import PeftModel

from peftcode.data.prompts import inference_prompts, prompt_style
from peftcode.data.retrieval import nearest
from peftcode.data.splits import read_split
from peftcode.hardware.memory import JobMeter, parameter_counts, weight_footprint_mb
from peftcode.hardware.placement import job_device
from peftcode.hardware.precision import Precision
from peftcode.hardware.precision import resolve as resolve_precision
from peftcode.inference.decoding import generate_candidates
from peftcode.inference.resume_store import ResumeStore, generation_key
from peftcode.models.adapters import adapter_location, check_base_weights
from peftcode.models.checkpoints import load_checkpoint, model_commit
from peftcode.models.probe import PROBE_FILE, probe_agreement
from peftcode.study.kinds import MERGEABLE_PEFT_TYPES
from peftcode.study.settings import InferSettings

# Merging an adapter moves a near-tie's top-1 at most; a broken load moves most of them.
MIN_PROBE_AGREEMENT = 0.9


@dataclass
class Loaded:
    """The model a cell generates with, and what it was loaded from."""

    model: torch.nn.Module
    tokenizer: object
    precision: Precision
    adapter: Path | None  # where the adapter loaded from (a fine-tune's checkpoint, or a fetched one)
    probe_agreement: float | None  # the share of the fine-tune's probe predictions it reproduces


@dataclass
class Decoding:
    """A cell's prompts and how they are decoded, chunk by chunk into the resume store."""

    loaded: Loaded
    settings: InferSettings
    prompts: list[str]
    prefixes: list[str]
    store: ResumeStore

    def generated(self, stage: str, sampling: dict | None) -> list[list[str]]:
        """Every prompt's candidates (``sampling=None``) or draws: resumed chunks as they were, the rest
        decoded."""
        model, tokenizer, settings = self.loaded.model, self.loaded.tokenizer, self.settings
        return self.store.generated(
            stage,
            len(self.prompts),
            lambda first, last: generate_candidates(
                model,
                tokenizer,
                self.prompts[first:last],
                settings,
                sampling,
                self.loaded.precision,
                self.prefixes[first:last],
                first,
            ),
            settings.batch_size,
        )


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


def infer(
    model_dir: str | Path,
    adapter_dir: str | Path | None,
    data_dir: str | Path,
    out_path: str | Path,
    cost_path: str | Path,
    settings: InferSettings,
    threads: int | None = None,
    gpus: int = 1,
    gpu_memory_gb: float | None = None,
    embeddings_path: str | Path | None = None,
    resume_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Generate candidates for one cell's test split on the job's device (or spread over its ``gpus``);
    writes them as parquet with the job's cost record. Finished examples are kept in ``resume_dir`` as
    they go, for a rerun to resume from (:mod:`peftcode.inference.resume_store`)."""
    meter = JobMeter()
    if threads:
        torch.set_num_threads(threads)
    loaded = load_model(model_dir, adapter_dir, settings, gpus, gpu_memory_gb)
    test = read_split(data_dir, "test")
    prompts = build_prompts(test, data_dir, settings, loaded.tokenizer, embeddings_path)
    splits = [Path(data_dir) / f"{split}.parquet" for split in ("test", "train")[: 1 + bool(settings.shots)]]
    inputs = [model_dir, loaded.adapter, *splits, embeddings_path]
    key = generation_key(settings.as_dict(), inputs, loaded.precision.name, loaded.model)
    decoding = Decoding(loaded, settings, prompts, list(test["prefix"]), ResumeStore(resume_dir, key))
    generations = generations_frame(test, decoding, decoding.generated("candidates", None))
    if settings.sampling:
        add_samples(generations, test, decoding)
    generations.to_parquet(out_path, index=False)
    write_record(cost_path, meter, loaded, decoding, generations, model_dir)
    decoding.store.finish()
    return generations


def load_model(
    model_dir, adapter_dir, settings: InferSettings, gpus: int, gpu_memory_gb: float | None
) -> Loaded:
    """The model in the job's precision, its adapter over it; stops where it does not reproduce the
    fine-tune's own predictions on its probe example (a checkpoint that did not load as trained)."""
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
    return Loaded(model, tokenizer, precision, adapter, agreement)


def build_prompts(
    test: pd.DataFrame, data_dir, settings: InferSettings, tokenizer, embeddings_path
) -> list[str]:
    """Each test example's prompt: zero-shot, or with in-context examples drawn by seed or retrieved."""
    return inference_prompts(
        test,
        read_split(data_dir, "train") if settings.shots else None,
        settings.family,
        settings.shots,
        settings.seed,
        settings.retriever,
        prompt_style(settings.prompt, tokenizer),
        nearest(embeddings_path, settings.shots) if embeddings_path else None,
    )


def generations_frame(test: pd.DataFrame, decoding: Decoding, candidates: list[list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": test["id"],
            "source_id": test["source_id"],
            "intent": test["intent"],
            "reference": test["code"],
            "prompt": [
                prompt + prefix for prompt, prefix in zip(decoding.prompts, decoding.prefixes, strict=True)
            ],
            "candidates": candidates,
        }
    )


def add_samples(generations: pd.DataFrame, test: pd.DataFrame, decoding: Decoding) -> None:
    """Draws for pass@k, on problems that carry tests; a greedy draw is the greedy candidate, where the
    search is greedy too."""
    sampling, settings = decoding.settings.sampling, decoding.settings
    if sampling["temperature"] == 0 and settings.num_beams == 1:
        generations["samples"] = [row[:1] for row in generations["candidates"]]
    else:
        generations["samples"] = decoding.generated("samples", sampling)
    generations["tests"] = test["tests"]
    generations["difficulty"] = test["difficulty"]


def write_record(
    cost_path, meter: JobMeter, loaded: Loaded, decoding: Decoding, generations, model_dir
) -> dict:
    """The job's cost record: memory, parameters, and the candidates' speed over every attempt's chunks (the
    examples resumed counted)."""
    model, settings, store = loaded.model, decoding.settings, decoding.store
    generation_time = store.seconds["candidates"]
    candidate_tokens = sum(
        len(loaded.tokenizer(c[len(prefix) :])["input_ids"])
        for row, prefix in zip(generations["candidates"], decoding.prefixes, strict=True)
        for c in row
    )
    return meter.write(
        cost_path,
        job="infer",
        **parameter_counts(model),
        weight_footprint_mb=weight_footprint_mb(model),
        precision=loaded.precision.name,
        devices=sorted({str(p.device) for p in model.parameters()}),
        model_commit=model_commit(model_dir),
        quantization_bits=(settings.quantization or {}).get("bits"),
        checkpoint_probe_agreement=loaded.probe_agreement,
        examples=len(generations),
        resumed_examples=store.resumed["candidates"],
        examples_per_s=round(len(generations) / generation_time, 3),
        candidate_tokens=candidate_tokens,
        tokens_per_s=round(candidate_tokens / generation_time, 1),
    )
