"""Model checkpoints: a hub id, a local directory, a GGUF file shipped in a Python package, or a config to
build from
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
from transformers import (
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from peftcode.data.packaged import gguf_location
from peftcode.hardware.placement import (
    MODEL_CLASSES,
    device_map_for,
    job_device,
)
from peftcode.models.hub_config import hub_config

MANIFEST = "peftcode_model.json"


class QuantizationError(RuntimeError):
    """A QLoRA run asked of a model or device that bitsandbytes cannot quantize."""


def load_tokenizer_from(source: dict) -> PreTrainedTokenizerBase:
    if "gguf" in source:
        directory, file = gguf_location(source["gguf"])
        return AutoTokenizer.from_pretrained(directory, gguf_file=file)
    return AutoTokenizer.from_pretrained(source.get("hub") or source["path"])


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


def config_json(model_dir: str | Path) -> dict:
    """The model's config.json, read where its weights are (the directory or the hub cache)."""
    location, options = weights_location(model_dir)
    if "revision" not in options:
        return json.loads((Path(location) / "config.json").read_text())
    return hub_config(location, options["revision"], local_only=True)


def load_checkpoint(
    model_dir: str | Path,
    family: str,
    dtype: torch.dtype = torch.float32,
    gpus: int = 1,
    gpu_memory_gb: float | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the model of a directory written by :func:`prepare_model`, :func:`quantize_model` or a full
    fine-tune, its weights in ``dtype`` (a quantized model's linear layers stay quantized), on the job's
    device or spread over its ``gpus`` (see :mod:`peftcode.hardware.placement`)."""
    device = job_device()
    model_class = MODEL_CLASSES[family]
    location, options = weights_location(model_dir)
    device_map = device_map_for(location, options, family, gpus, gpu_memory_gb, dtype)
    quantized = config_json(model_dir).get("quantization_config")
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
    return model, load_tokenizer(model_dir)


def load_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a model directory, padding with its end of text where it names no pad token."""
    location, options = weights_location(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(location, **options)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def is_8bit(model) -> bool:
    """Whether the model's linear layers are bitsandbytes' 8-bit ones (LLM.int8)."""
    quantization = getattr(model.config, "quantization_config", None) or {}
    if not isinstance(quantization, dict):
        quantization = quantization.to_dict()
    return bool(quantization.get("load_in_8bit"))
