"""Model shapes: what the memory plan needs of a model (widths, layers, its linear layers), read off a
meta-device model of its config.json, without weights, and what PEFT builds on that model; both cached on
disk.

A hub model's config.json comes from :mod:`peftcode.models.hub_config` (the Hugging Face cache, the configs
this package ships for the studies in ``studies/``, or the hub).
Every snakemake call parses the Snakefile, which plans: torch, transformers and PEFT load only where a shape
is not in the cache yet or a config must be read off a GGUF file.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from peftcode.data.packaged import gguf_location
from peftcode.jobs.cache import CACHE, write_atomically
from peftcode.jobs.versions import code_version
from peftcode.models.hub_config import hub_config
from peftcode.study.families import FAMILIES, is_encoder_decoder
from peftcode.study.settings import ModelSettings


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a model, read off a meta-device model of its config."""

    model_type: str
    family: str
    params: int
    hidden: int
    intermediate: int
    kv: int  # key/value width (heads x head size)
    layers: int  # encoder and decoder layers together for a seq2seq model
    decoder_layers: int
    vocab: int
    gated: bool  # a feed-forward with a gate (two input matrices)
    linears: dict = field(default_factory=dict)  # name -> (in, out): the blocks' matrices
    embedding_params: int = 0
    head_params: int = 0  # the output embedding when not tied to the input one
    stored_bytes: int = 4  # per weight in the checkpoint (its config's dtype; ours are saved in float32)
    shares_prompts: bool = False  # sampled draws read their prompt's keys and values from one copy
    config: dict = field(default_factory=dict)  # the config.json fields it was read from


def _width(config, *names: str, default: int | None = None) -> int:
    for name in names:
        value = getattr(config, name, None)
        if value:
            return int(value)
    if default is None:
        raise ValueError(f"{config.model_type}: none of {', '.join(names)} in the config")
    return default


def uninitialised_meta_model(config, family: str):
    """The meta-device model of ``config`` (``meta_model``) without its weights' initialisation, which on meta
    tensors runs op by op through torch's reference implementations: most of a cold planning parse's time
    (benchmarks/README.md), for values nobody reads."""
    import torch
    from transformers.initialization import no_init_weights

    from peftcode.hardware.placement import meta_model

    with torch.device("meta"), no_init_weights():
        return meta_model(config, family)


def shape_of_config(fields: dict, family: str) -> Shape:
    """The shape of a model from its config.json fields (cached on disk: a meta model of 34B parameters
    takes seconds to build)."""
    key = [fields, family, code_version("planning.shapes")]
    key = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    cached = CACHE / f"{key}.json"
    if cached.is_file():
        return Shape(**json.loads(cached.read_text()))
    import torch
    from transformers import AutoConfig

    from peftcode.inference import shared_prompt

    original, fields = dict(fields), dict(fields)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    model = uninitialised_meta_model(config, family)
    head = model.get_output_embeddings()
    embedding = model.get_input_embeddings()
    tied = head is not None and head.weight is embedding.weight
    linears = {
        name: (module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    }
    hidden = _width(config, "hidden_size", "n_embd", "d_model")
    heads = _width(config, "num_attention_heads", "n_head", "num_heads")
    head_size = getattr(config, "head_dim", None) or getattr(config, "d_kv", None) or hidden // heads
    intermediate = _width(config, "intermediate_size", "n_inner", "d_ff", default=4 * hidden)
    decoder = _width(config, "num_decoder_layers", default=0) if is_encoder_decoder(family) else 0
    layers = _width(config, "num_hidden_layers", "n_layer", "num_layers") + decoder
    # The first block's matrices (an encoder's, for a seq2seq model): a gated feed-forward has two that
    # widen to the intermediate size.
    first = next(name for name in linears if ".0." in name)
    block = first[: first.index(".0.") + 3]
    widening = sum(name.startswith(block) and out == intermediate for name, (_, out) in linears.items())
    shape = Shape(
        model_type=config.model_type,
        family=family,
        params=sum(p.numel() for p in model.parameters()),
        hidden=hidden,
        intermediate=intermediate,
        kv=_width(config, "num_key_value_heads", default=heads) * head_size,
        layers=layers,
        decoder_layers=decoder or layers,
        vocab=_width(config, "vocab_size"),
        gated=widening >= 2,
        linears=linears,
        embedding_params=sum(
            p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()
        ),
        head_params=0 if tied or head is None else head.weight.numel(),
        stored_bytes={"bfloat16": 2, "float16": 2}.get(fields.get("torch_dtype") or fields.get("dtype"), 4),
        shares_prompts=shared_prompt.serves(model),
        config=original,
    )
    write_atomically(cached, json.dumps(shape.__dict__))
    return shape


@dataclass(frozen=True)
class PeftBuilt:
    """What PEFT builds for a method on a model: its trainable tensors' shapes, the parameters and buffers it
    adds that do not train (VeRA's shared projections), and the (in, out) widths of the layers it adapts."""

    trainable: list
    frozen_added: int
    adapted: list


def counting_options(peft_type: str, options: dict) -> dict:
    """A method's options as the count builds them on a meta-device model: initialisations that read the
    weights, data or a tokenizer (PiSSA, OLoRA, LoftQ, EVA, prompt tuning from text) give the same shapes
    from PEFT's default initialisation."""
    options = {
        key: value
        for key, value in options.items()
        if not key.startswith(("prompt_tuning_init", "tokenizer_"))
    }
    if isinstance(options.get("init_lora_weights"), str):
        options["init_lora_weights"] = True
    if peft_type == "ADALORA":
        options.setdefault("total_step", 1000)
    return options


def peft_built(shape: Shape, peft_type: str, options: dict) -> PeftBuilt:
    """What PEFT builds for a method (see :class:`PeftBuilt`), from the PEFT model applied to the meta-device
    model of the shape's config: no per-kind formula to keep. Cached on disk: PEFT takes seconds to load."""
    from importlib.metadata import version

    options = counting_options(peft_type, options)
    key = [shape.config, shape.family, peft_type, options, version("peft"), code_version("planning.shapes")]
    key = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    cached = CACHE / f"peft-{key}.json"
    if cached.is_file():
        return PeftBuilt(**json.loads(cached.read_text()))
    import torch
    from peft import get_peft_model
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers import AutoConfig

    fields = dict(shape.config)
    model = uninitialised_meta_model(AutoConfig.for_model(fields.pop("model_type"), **fields), shape.family)
    before = sum(t.numel() for t in [*model.parameters(), *model.buffers()])
    task = FAMILIES[shape.family].peft_task_type
    with torch.device("meta"):
        peft_model = get_peft_model(model, PEFT_TYPE_TO_CONFIG_MAPPING[peft_type](task_type=task, **options))
    trainable = [tuple(p.shape) for p in peft_model.parameters() if p.requires_grad]
    every = sum(t.numel() for t in [*peft_model.parameters(), *peft_model.buffers()])
    adapted = [
        (module.in_features, module.out_features)
        for module in peft_model.modules()
        if isinstance(module, BaseTunerLayer) and hasattr(module, "in_features")
    ]
    built = PeftBuilt(trainable, every - before - sum(math.prod(t) for t in trainable), adapted)
    write_atomically(cached, json.dumps(built.__dict__))
    return built


def model_fields(settings: ModelSettings) -> dict:
    """The config.json fields of a model, read without its weights: from the hub (config.json alone), a
    local directory, a GGUF file's metadata, or the config a built model is built from."""
    source = settings.source
    if "hub" in source:
        return hub_config(source["hub"], source.get("revision"))
    if "path" in source:
        return json.loads((Path(source["path"]) / "config.json").read_text())
    return _converted_fields(json.dumps(settings.as_dict(), sort_keys=True))


@cache
def _converted_fields(settings_json: str) -> dict:
    """A GGUF or built model's config (a GGUF header, or a tokenizer for a built model's vocabulary, takes
    seconds to read: cached on disk by the settings and the file's size and time)."""
    settings = json.loads(settings_json)
    source = settings["source"]
    stamps = []
    for spec in (source, settings["tokenizer"] or {}):
        if "gguf" in spec:
            stat = (Path(gguf_location(spec["gguf"])[0]) / spec["gguf"]["file"]).stat()
            stamps.append([stat.st_size, stat.st_mtime_ns])
    key = hashlib.sha256(json.dumps([settings_json, stamps]).encode()).hexdigest()[:20]
    cached = CACHE / f"fields-{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    from transformers import AutoConfig

    from peftcode.models.checkpoints import load_tokenizer_from

    if "gguf" in source:
        directory, file = gguf_location(source["gguf"])
        fields = AutoConfig.from_pretrained(directory, gguf_file=file).to_dict()
    else:
        build = dict(source["build"])
        vocab = len(load_tokenizer_from(settings["tokenizer"]))
        fields = AutoConfig.for_model(build.pop("model_type"), vocab_size=vocab, **build).to_dict()
    fields.pop("quantization_config", None)
    write_atomically(cached, json.dumps(fields))
    return fields
