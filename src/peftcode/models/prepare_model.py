"""A model directory made from a config's ``models`` entry (the ``prepare_model`` rule): a hub model
downloaded into the Hugging Face cache, a local directory checksummed, a built or GGUF model converted; each
with its manifest (see :mod:`peftcode.models.checkpoints`)."""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub import HfApi, snapshot_download
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase

from peftcode.data.packaged import gguf_location
from peftcode.hardware.placement import MODEL_CLASSES, meta_model
from peftcode.models.checkpoints import load_tokenizer_from, weights_checksum, write_manifest
from peftcode.study.families import is_encoder_decoder
from peftcode.study.settings import ModelSettings

# Weight formats the hub may hold a model in besides safetensors, which is downloaded alone where present.
OTHER_WEIGHTS = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.ot", "*.onnx", "*.gguf"]


def _convert_source(settings: ModelSettings) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A built or GGUF model in float32, to save as a checkpoint."""
    source, model_class = settings.source, MODEL_CLASSES[settings.family]
    tokenizer = load_tokenizer_from(settings.tokenizer or source)
    if "build" in source:
        build = dict(source["build"])
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        special = {"pad_token_id": pad, "eos_token_id": tokenizer.eos_token_id}
        if is_encoder_decoder(settings.family):
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
