"""The inference recipe: one cell's model (plus adapter) and test split -> its generations: the top-k
beam-search candidates of every test example and, for a test set with tests, the sampled programs of
pass@k; with the job's cost record.

In phases: :func:`load_model` (the model, its adapter merged where it merges, checked against the
fine-tune's probe; for a cell vLLM decodes, what its worker loads: :func:`load_for_vllm`),
:func:`build_prompts` (zero-shot, in-context or retrieved examples), the candidates and samples decoded in
resumable chunks (:mod:`peftcode.inference.decoding` or :mod:`peftcode.inference.vllm_decoding`,
:mod:`peftcode.inference.resume_store`), and :func:`write_record`.
"""

from __future__ import annotations

import contextlib
import gc
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from huggingface_hub import snapshot_download
from peft import PeftModel
from transformers import AutoConfig, GenerationConfig

from peftcode.data.prompts import inference_prompts, prompt_style
from peftcode.data.retrieval import nearest
from peftcode.data.splits import read_split
from peftcode.hardware.memory import JobMeter, parameter_counts, weight_footprint_mb
from peftcode.hardware.placement import job_device, meta_model
from peftcode.hardware.precision import Precision
from peftcode.hardware.precision import resolve as resolve_precision
from peftcode.inference.decoding import encode_prompts, end_ids, generate_candidates, reshapes_scores
from peftcode.inference.resume_store import ResumeStore, generation_key
from peftcode.inference.vllm_decoding import VllmDecoder, lora_request_rank
from peftcode.models.adapters import adapter_location, check_base_weights
from peftcode.models.checkpoints import load_checkpoint, load_tokenizer, model_commit, weights_location
from peftcode.models.probe import PROBE_FILE, probe_agreement, recorded_agreement, recorded_probe
from peftcode.study.kinds import MERGEABLE_PEFT_TYPES
from peftcode.study.settings import InferSettings

# Merging an adapter moves a near-tie's top-1 at most; a broken load moves most of them.
MIN_PROBE_AGREEMENT = 0.9


@dataclass
class Loaded:
    """The model a cell generates with, and what it was loaded from."""

    model: torch.nn.Module | None  # None where vLLM decodes: the model is its worker's
    tokenizer: object
    precision: Precision
    adapter: Path | None  # where the adapter loaded from (a fine-tune's checkpoint, or a fetched one)
    probe_agreement: float | None  # the share of the fine-tune's probe predictions it reproduces
    vllm: VllmDecoder | None = None

    @property
    def engine(self) -> str:
        return "vllm" if self.vllm else "ours"


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
        loaded, settings = self.loaded, self.settings
        model, tokenizer, vllm = loaded.model, loaded.tokenizer, loaded.vllm

        def chunk(first: int, last: int) -> list[list[str]]:
            prompts, prefixes = self.prompts[first:last], self.prefixes[first:last]
            if vllm:
                encoded = encode_prompts(tokenizer, prompts, prefixes, settings)
                return vllm.candidates(encoded, prefixes, sampling, first)
            return generate_candidates(
                model, tokenizer, prompts, settings, sampling, loaded.precision, prefixes, first
            )

        return self.store.generated(stage, len(self.prompts), chunk, settings.batch_size)


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
    vllm_engine: dict | None = None,
) -> pd.DataFrame:
    """Generate candidates for one cell's test split on the job's device (or spread over its ``gpus``);
    writes them as parquet with the job's cost record. Finished examples are kept in ``resume_dir`` as
    they go, for a rerun to resume from (:mod:`peftcode.inference.resume_store`). A cell vLLM decodes
    (``settings.engine``) runs it in ``vllm_engine``'s environment (its ``python`` and ``vllm`` version,
    as :mod:`peftcode.inference.vllm_engine` found them)."""
    meter = JobMeter()
    if threads:
        torch.set_num_threads(threads)
    with contextlib.ExitStack() as stack:
        # A merged checkpoint for vLLM's worker to load lives here until the worker has loaded it.
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="peftcode-infer-"))
        loaded = load_model(model_dir, adapter_dir, settings, gpus, gpu_memory_gb, vllm_engine, scratch)
        if loaded.vllm:
            stack.callback(loaded.vllm.close)
        test = read_split(data_dir, "test")
        prompts = build_prompts(test, data_dir, settings, loaded.tokenizer, embeddings_path)
        splits = [Path(data_dir) / f"{s}.parquet" for s in ("test", "train")[: 1 + bool(settings.shots)]]
        inputs = [model_dir, loaded.adapter, *splits, embeddings_path]
        key = generation_key(settings.as_dict(), inputs, loaded.precision.name, devices(loaded))
        key["engine"] = vllm_engine if loaded.vllm else "ours"
        decoding = Decoding(loaded, settings, prompts, list(test["prefix"]), ResumeStore(resume_dir, key))
        if loaded.vllm:
            start_vllm(loaded, decoding, model_dir)
        generations = generations_frame(test, decoding, decoding.generated("candidates", None))
        if settings.sampling:
            add_samples(generations, test, decoding)
        generations.to_parquet(out_path, index=False)
        write_record(cost_path, meter, loaded, decoding, generations, model_dir)
    decoding.store.finish()
    return generations


def load_model(
    model_dir,
    adapter_dir,
    settings: InferSettings,
    gpus: int,
    gpu_memory_gb: float | None,
    vllm_engine: dict | None = None,
    scratch: str | None = None,
) -> Loaded:
    """The model in the job's precision, its adapter over it; stops where it does not reproduce the
    fine-tune's own predictions on its probe example (a checkpoint that did not load as trained). For a
    cell vLLM decodes, what its worker loads (:func:`load_for_vllm`), checked once it has started."""
    precision = resolve_precision(settings.precision, job_device())
    adapter = adapter_location(adapter_dir) if adapter_dir else None
    if adapter:
        check_base_weights(adapter_dir, model_dir)
    if settings.engine == "vllm":
        if vllm_engine is None:
            raise ValueError("this cell's engine is vllm, and no vLLM environment was given (vllm_engine)")
        vllm = load_for_vllm(model_dir, adapter, settings, precision, vllm_engine, scratch, gpus)
        if vllm is not None:
            return Loaded(None, vllm.tokenizer, precision, adapter, None, vllm)
    model, tokenizer = load_for_inference(
        model_dir, adapter, settings.family, precision.dtype, gpus, gpu_memory_gb
    )
    agreement = probe_agreement(model, adapter or Path(model_dir), precision)
    check_agreement(agreement, adapter or Path(model_dir))
    return Loaded(model, tokenizer, precision, adapter, agreement)


def check_agreement(agreement: float | None, checkpoint_dir: Path) -> None:
    if agreement is not None and agreement < MIN_PROBE_AGREEMENT:
        raise RuntimeError(
            f"{checkpoint_dir}: the loaded model reproduces only {agreement:.0%} of the fine-tune's top-1 "
            f"predictions on its probe example ({PROBE_FILE}); the checkpoint did not load as trained"
        )


def load_for_vllm(
    model_dir,
    adapter: Path | None,
    settings: InferSettings,
    precision: Precision,
    engine: dict,
    scratch,
    gpus,
) -> VllmDecoder | None:
    """What vLLM's worker loads: the model directory's weights (a full fine-tune's own; a hub model's from
    the cache's snapshot), spread over the job's ``gpus``, with a plain LoRA adapter as a LoRA request in
    float32; any other adapter, and any adapter in a lower precision (where ours computes with the weights
    it merged into, rounded), merged into a checkpoint of its own in ``scratch``. None where the model's
    generation config reshapes scores, which our decoder follows and vLLM would not."""
    location, options = weights_location(model_dir)
    tokenizer = load_tokenizer(model_dir)
    generation = load_generation_config(location, options)
    if reshapes_scores(generation):
        print(f"vllm: {location}'s generation config reshapes scores; ours decodes this cell", flush=True)
        return None
    config = AutoConfig.from_pretrained(location, **loading_options(options))
    shape = meta_model(config, settings.family, options["trust_remote_code"])
    total = sum(parameter.numel() for parameter in shape.parameters())
    if options.get("local_files_only"):  # the hub cache's snapshot: the worker never asks the network
        location = snapshot_download(location, revision=options["revision"], local_files_only=True)
    load = {
        "model": location,
        "dtype": str(precision.dtype).removeprefix("torch."),
        "seed": settings.seed,
        "options": {"trust_remote_code": options["trust_remote_code"], "tensor_parallel_size": max(gpus, 1)},
    }
    rank = lora_request_rank(adapter) if adapter and precision.name == "fp32" else None
    merged = Path(scratch) / "merged" if adapter and not rank else None
    if rank:
        load.update(adapter=str(adapter), max_lora_rank=rank)
    elif merged:
        merge_for_vllm(model_dir, adapter, settings, precision, tokenizer, merged)
        load.update(model=str(merged), options={**load["options"], "trust_remote_code": False})
    return VllmDecoder(engine, load, tokenizer, settings, end_ids(generation), total, merged)


def merge_for_vllm(model_dir, adapter, settings: InferSettings, precision: Precision, tokenizer, merged):
    """The adapter merged into its base as ours merges it, saved for the worker; its memory given back
    before vLLM starts (it takes a share of the whole GPU's)."""
    model, _ = load_for_inference(model_dir, adapter, settings.family, precision.dtype)
    model.save_pretrained(merged)
    tokenizer.save_pretrained(merged)
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_generation_config(location: str, options: dict) -> GenerationConfig:
    """The generation config our decoder reads from the loaded model: the checkpoint's, or its config's."""
    loading = loading_options(options)
    try:
        return GenerationConfig.from_pretrained(location, **loading)
    except OSError:
        return GenerationConfig.from_model_config(AutoConfig.from_pretrained(location, **loading))


def loading_options(options: dict) -> dict:
    return {k: options[k] for k in ("revision", "trust_remote_code", "local_files_only") if k in options}


def start_vllm(loaded: Loaded, decoding: Decoding, model_dir) -> None:
    """vLLM's worker, its context as long as the longest prompt, checked against the fine-tune's probe."""
    vllm, settings = loaded.vllm, decoding.settings
    encoded = encode_prompts(loaded.tokenizer, decoding.prompts, decoding.prefixes, settings)
    checkpoint_dir = loaded.adapter or Path(model_dir)
    probe = recorded_probe(checkpoint_dir)
    longest = max([len(ids) for ids in encoded] + [len(probe["top1"]) if probe else 0])
    vllm.start(longest, torch.get_num_threads())
    if vllm.merged:  # loaded by the worker: no longer needed
        shutil.rmtree(vllm.merged, ignore_errors=True)
    loaded.probe_agreement = recorded_agreement(
        checkpoint_dir, lambda recorded: vllm.probe(recorded["example"]["input_ids"])
    )
    check_agreement(loaded.probe_agreement, checkpoint_dir)


def devices(loaded: Loaded) -> list[str]:
    """Where the cell's model computes."""
    if loaded.model is None:
        return [job_device().type]
    return sorted({str(parameter.device) for parameter in loaded.model.parameters()})


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
    settings, store = decoding.settings, decoding.store
    generation_time = store.seconds["candidates"]
    candidate_tokens = sum(
        len(loaded.tokenizer(c[len(prefix) :])["input_ids"])
        for row, prefix in zip(generations["candidates"], decoding.prefixes, strict=True)
        for c in row
    )
    return meter.write(
        cost_path,
        job="infer",
        **model_record(loaded, meter),
        engine=loaded.engine,
        precision=loaded.precision.name,
        devices=devices(loaded),
        model_commit=model_commit(model_dir),
        quantization_bits=(settings.quantization or {}).get("bits"),
        checkpoint_probe_agreement=loaded.probe_agreement,
        examples=len(generations),
        resumed_examples=store.resumed["candidates"],
        examples_per_s=round(len(generations) / generation_time, 3),
        candidate_tokens=candidate_tokens,
        tokens_per_s=round(candidate_tokens / generation_time, 1),
    )


def model_record(loaded: Loaded, meter: JobMeter) -> dict:
    """The cost record's parameters and weights; where vLLM decodes, its worker's, whose peak memory adds to
    the job's (the two processes run side by side)."""
    if loaded.vllm is None:
        return {**parameter_counts(loaded.model), "weight_footprint_mb": weight_footprint_mb(loaded.model)}
    worker = loaded.vllm.memory()
    return {
        "total_params": loaded.vllm.total_params,
        "trainable_params": 0,
        "weight_footprint_mb": round(loaded.vllm.total_params * loaded.precision.dtype.itemsize / 2**20, 1),
        "peak_rss_mb": round(meter.snapshot()["peak_rss_mb"] + worker["peak_rss_mb"], 1),
        "vllm_peak_rss_mb": worker["peak_rss_mb"],
        "vllm_gpu_peak_mb": worker["gpu_peak_mb"],
        "vllm_version": loaded.vllm.engine.version,
    }
