"""Models: a hub id, a local directory, a GGUF file shipped in a Python package, or a config to build from
-> a model directory that every later job loads offline.

A hub model is not copied: ``prepare_model`` downloads it once into the Hugging Face cache at the config's
revision and writes only a manifest with the commit it resolved to; later jobs load that commit from the
cache, without the network. A local model directory (a cluster's shared copy, say) is not copied either:
the manifest names its path and a checksum of its weights' index, and later jobs load it where it is, in
the precision they ask for. Built and GGUF sources are converted into a local safetensors checkpoint
(weights, config, tokenizer) with the same manifest beside it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import torch
from huggingface_hub import HfApi, snapshot_download
from transformers import (
    AutoConfig,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from peftcode.hub_config import hub_config
from peftcode.memory import JobMeter, weight_footprint_mb
from peftcode.packaged import gguf_location
from peftcode.placement import MODEL_CLASSES, device_map_for, job_device, meta_model, single_device_map
from peftcode.precision import Precision
from peftcode.precision import resolve as resolve_precision
from peftcode.settings import ModelSettings

MANIFEST = "peftcode_model.json"
# Weight formats the hub may hold a model in besides safetensors, which is downloaded alone where present.
OTHER_WEIGHTS = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.ot", "*.onnx", "*.gguf"]


class QuantizationError(RuntimeError):
    """A QLoRA run asked of a model or device that bitsandbytes cannot quantize."""


def load_tokenizer_from(source: dict) -> PreTrainedTokenizerBase:
    if "gguf" in source:
        directory, file = gguf_location(source["gguf"])
        return AutoTokenizer.from_pretrained(directory, gguf_file=file)
    return AutoTokenizer.from_pretrained(source.get("hub") or source["path"])


def _convert_source(settings: ModelSettings) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A built or GGUF model in float32, to save as a checkpoint."""
    source, model_class = settings.source, MODEL_CLASSES[settings.family]
    tokenizer = load_tokenizer_from(settings.tokenizer or source)
    if "build" in source:
        build = dict(source["build"])
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        special = {"pad_token_id": pad, "eos_token_id": tokenizer.eos_token_id}
        if settings.family == "seq2seq":
            special["decoder_start_token_id"] = pad
        config = AutoConfig.for_model(build.pop("model_type"), vocab_size=len(tokenizer), **special, **build)
        torch.manual_seed(0)
        return model_class.from_config(config), tokenizer
    directory, file = gguf_location(source["gguf"])
    loaded = model_class.from_pretrained(directory, gguf_file=file, dtype=torch.float32)
    # The de-quantized model still carries the GGUF quantization config, which a plain reload rejects:
    # copy its weights into a fresh model built from the cleaned config.
    config = loaded.config
    del config.quantization_config
    model = model_class.from_config(config)
    model.load_state_dict(loaded.state_dict())
    return model, tokenizer


def _download_from_hub(settings: ModelSettings) -> tuple[str, str]:
    """Download a hub model's config, tokenizer, code and weights into the Hugging Face cache (once: files
    already there are not fetched again); returns the commit the revision resolved to and its folder."""
    source = settings.source
    revision = source.get("revision")
    files = HfApi().list_repo_files(source["hub"], revision=revision)
    ignore = OTHER_WEIGHTS if any(name.endswith(".safetensors") for name in files) else OTHER_WEIGHTS[5:]
    folder = snapshot_download(source["hub"], revision=revision, ignore_patterns=ignore)
    return Path(folder).name, folder


def prepare_model(settings: ModelSettings, out_dir: str | Path) -> dict:
    """Make ``out_dir`` the model directory of ``settings``: a manifest, and for non-hub sources the
    converted checkpoint and tokenizer. Returns the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trust = settings.trust_remote_code
    manifest = {
        "source": settings.source,
        "family": settings.family,
        "pretrained": settings.pretrained,
        "trust_remote_code": trust,
    }
    if "hub" in settings.source:
        commit, folder = _download_from_hub(settings)
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust)
        manifest.update(weights="hub", hub={"repo": settings.source["hub"], "commit": commit})
    elif "path" in settings.source:
        folder = Path(settings.source["path"]).resolve()
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust)
        manifest.update(weights="path", hub=None, path=str(folder), sha256=weights_checksum(folder))
    else:
        model, tokenizer = _convert_source(settings)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        config = model.config
        manifest.update(weights="local", hub=None)
    manifest.update(
        model_type=config.model_type,
        parameters=sum(p.numel() for p in meta_model(config, settings.family, trust).parameters()),
    )
    write_manifest(out_dir, manifest)
    return manifest


def weights_checksum(model_dir: Path) -> str:
    """SHA-256 of a folder's weights: their index where they are sharded (with each shard's name and size),
    else the one weights file (safetensors, or a PyTorch .bin)."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    index = sorted(model_dir.glob("*.index.json"))
    shards = sorted(p for pattern in ("*.safetensors", "*.bin") for p in model_dir.glob(pattern))
    for path in index or shards:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    if index:
        digest.update(json.dumps([[p.name, p.stat().st_size] for p in shards]).encode())
    return digest.hexdigest()


def write_manifest(model_dir: str | Path, manifest: dict) -> None:
    (Path(model_dir) / MANIFEST).write_text(json.dumps(manifest, indent=2))


def read_manifest(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / MANIFEST).read_text())


def model_commit(model_dir: str | Path) -> str | None:
    """The hub commit a model directory's weights came from; None for other sources."""
    hub = read_manifest(model_dir).get("hub")
    return hub["commit"] if hub else None


def weights_location(model_dir: str | Path) -> tuple[str, dict]:
    """Where a model directory's weights, config and tokenizer load from, and the loading arguments: the
    directory itself, or the hub cache's resolved commit (never the network)."""
    manifest = read_manifest(model_dir)
    options = {"trust_remote_code": manifest["trust_remote_code"]}
    if manifest["weights"] == "hub":
        hub = manifest["hub"]
        return hub["repo"], {**options, "revision": hub["commit"], "local_files_only": True}
    if manifest["weights"] == "path":
        return manifest["path"], options
    return str(model_dir), options


def model_options(options: dict) -> dict:
    """``from_pretrained``'s arguments for a model's weights: transformers (5.24) looks for an adapter
    config in a hub repository without passing ``local_files_only`` on, and would ask the network (retrying
    for about 30 s when it is out of reach), so it is passed on here."""
    if options.get("local_files_only"):
        return {**options, "adapter_kwargs": {"local_files_only": True}}
    return options


def bitsandbytes_problem(device: torch.device) -> str | None:
    """Why bitsandbytes cannot run on ``device``, or None if it can."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install bitsandbytes)"
    import bitsandbytes

    supported = getattr(bitsandbytes, "supported_torch_devices", {"cuda"})
    if device.type not in supported:
        return (
            f"bitsandbytes {bitsandbytes.__version__} cannot run on device '{device.type}' "
            f"(supported: {', '.join(sorted(supported))})"
        )
    return None


def _config_json(model_dir: str | Path) -> dict:
    """The model's config.json, read where its weights are (the directory or the hub cache)."""
    location, options = weights_location(model_dir)
    if "revision" not in options:
        return json.loads((Path(location) / "config.json").read_text())
    return hub_config(location, options["revision"], local_only=True)


def quantization_problem(model_dir: str | Path, device: torch.device) -> str | None:
    """Why bitsandbytes cannot quantize the model of ``model_dir`` on ``device``, or None if it can. Reads
    only the model's config, so that a run that cannot work stops before loading any weights."""
    problem = bitsandbytes_problem(device)
    if problem is not None:
        return problem
    already = _config_json(model_dir).get("quantization_config")
    if already:
        return (
            f"{model_dir} holds a model already quantized with '{already.get('quant_method', 'unknown')}'; "
            "bitsandbytes needs unquantized weights to quantize"
        )
    return None


def bitsandbytes_config(quantization: dict, precision: Precision) -> BitsAndBytesConfig:
    """bitsandbytes' settings for QLoRA; 4-bit weights are de-quantized to the compute dtype for each matrix
    product, the precision's unless the method sets one."""
    if quantization["bits"] == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = quantization["compute_dtype"]
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization["quant_type"],
        bnb_4bit_use_double_quant=quantization["double_quant"],
        bnb_4bit_compute_dtype=precision.dtype if compute == "auto" else getattr(torch, compute),
    )


def quantize_model(
    model_dir: str | Path, out_dir: str | Path, family: str, quantization: dict, precision: str = "auto"
) -> dict:
    """Save the model of ``model_dir`` with its linear layers quantized by bitsandbytes (the rest in the
    precision's dtype), for QLoRA's fine-tune and inference jobs to load. Quantizing reads every weight, so
    it is a job of its own: the fine-tune's memory is then QLoRA's, not that of a one-off conversion.
    Returns the job's record."""
    meter = JobMeter()
    device = job_device()
    problem = quantization_problem(model_dir, device)
    if problem is not None:
        raise QuantizationError(f"cannot run {quantization['bits']}-bit QLoRA: {problem}")
    resolved = resolve_precision(precision, device)
    location, options = weights_location(model_dir)
    model = MODEL_CLASSES[family].from_pretrained(
        location,
        **model_options(options),
        dtype=resolved.dtype,
        quantization_config=bitsandbytes_config(quantization, resolved),
        device_map=single_device_map(device),
    )
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(location, **options).save_pretrained(out_dir)
    write_manifest(
        out_dir, {**read_manifest(model_dir), "weights": "local", "quantized_from": str(model_dir)}
    )
    return meter.write(
        out_dir / "memory.json",
        job="quantize",
        precision=resolved.name,
        weight_footprint_mb=weight_footprint_mb(model),
    )


def load_checkpoint(
    model_dir: str | Path,
    family: str,
    dtype: torch.dtype = torch.float32,
    gpus: int = 1,
    gpu_memory_gb: float | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the model of a directory written by :func:`prepare_model`, :func:`quantize_model` or a full
    fine-tune, its weights in ``dtype`` (a quantized model's linear layers stay quantized), on the job's
    device or spread over its ``gpus`` (see :mod:`peftcode.placement`)."""
    device = job_device()
    model_class = MODEL_CLASSES[family]
    location, options = weights_location(model_dir)
    device_map = device_map_for(location, options, family, gpus, gpu_memory_gb, dtype)
    quantized = _config_json(model_dir).get("quantization_config")
    if quantized and quantized.get("quant_method") == "bitsandbytes":
        problem = bitsandbytes_problem(device)
        if problem is not None:
            raise QuantizationError(f"cannot load the QLoRA base model in {model_dir}: {problem}")
    model = model_class.from_pretrained(
        location, **model_options(options), dtype=dtype, device_map=device_map
    )
    if quantized:
        # bitsandbytes 0.50 repacks a 4-bit weight for a faster CPU kernel at the first no-grad forward in
        # eval mode (a validation pass), and that kernel has no backward: every later gradient through the
        # layer is silently dropped and the adapters stop learning. Keep the trainable layout throughout.
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    tokenizer = AutoTokenizer.from_pretrained(location, **options)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def is_8bit(model) -> bool:
    """Whether the model's linear layers are bitsandbytes' 8-bit ones (LLM.int8)."""
    quantization = getattr(model.config, "quantization_config", None) or {}
    if not isinstance(quantization, dict):
        quantization = quantization.to_dict()
    return bool(quantization.get("load_in_8bit"))
