"""The memory plan: each cell's peak memory and compute, estimated from the model's shape and the cell's
settings before anything runs, and checked against the budget of the GPUs its jobs get.

A fine-tune's peak is the sum of what it holds at the end of its first backward pass, when the optimizer
is about to allocate its state (which it then holds too):
- weights: frozen weights in the precision's dtype (float32 for a full fine-tune's master weights; 1 or
  about 0.52 bytes a parameter for QLoRA's quantized linear layers, whose other weights PEFT's k-bit
  preparation keeps in float32), plus a full fine-tune's autocast copies of its matrices;
- trainable state: float32 gradients, and the optimizer's state (AdamW: two float32 values a parameter;
  Adafactor: a row and a column of each matrix, since the study ran it without a first moment);
- activations saved for the backward pass, per token and layer, from the layer's widths (attention,
  key/value, feed-forward, its norms), with a full layer's only for one layer and its input for the others
  under gradient checkpointing; plus the target-only logits and their float32 loss;
- the runtime's own: CUDA's context and workspace on a GPU, the framework's buffers on the CPU.
Inference holds the weights, and the key/value cache and float32 scores of the beam search or of the
sampler, whichever is larger: the sampler's draws of a prompt share the prompt's cache where the model's
attention lets them (:mod:`peftcode.shared_prompt`), each holding only its new tokens'.

Compute is the usual count, 2 FLOPs a parameter a token forward and 4 backward (2 for frozen weights, whose
gradients are not computed), plus a forward for gradient checkpointing, over the training tokens; GPU-hours
are that over ``resources.throughput_tflops``.

Every snakemake call parses the Snakefile, which plans: torch, transformers and PEFT (about 10 s of imports)
load only where a shape is not in the cache yet or a config must be read off a GGUF file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from peftcode.packaged import gguf_location
from peftcode.versions import code_version

MIB = 2**20
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
QUANTIZED_BYTES = {8: 1.0, 4: 0.52}  # per weight, quantization constants included
# What the runtime holds besides the job's tensors: on a GPU, CUDA's context, cuBLAS workspace and the
# allocator's fragmentation; on the CPU, the framework's buffers and the tokenizer (about 70 MiB on 2
# cores: the tiny model's whole fine-tune takes 105-140 MiB, see benchmarks/bench_plan.py).
RUNTIME_MIB = {"cuda": 1024, "cpu": 70}
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "peftcode" / "shapes"


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
    # PEFT's default target modules for the model type, by method: lora, ia3, ia3_feedforward
    default_targets: dict = field(default_factory=dict)


def _width(config, *names: str, default: int | None = None) -> int:
    for name in names:
        value = getattr(config, name, None)
        if value:
            return int(value)
    if default is None:
        raise ValueError(f"{config.model_type}: none of {', '.join(names)} in the config")
    return default


def shape_of_config(fields: dict, family: str) -> Shape:
    """The shape of a model from its config.json fields (cached on disk: a meta model of 34B parameters
    takes seconds to build)."""
    key = hashlib.sha256(json.dumps([fields, family, code_version("planner")], sort_keys=True).encode())
    key = key.hexdigest()[:20]
    cached = CACHE / f"{key}.json"
    if cached.is_file():
        return Shape(**json.loads(cached.read_text()))
    import torch
    from peft.utils import constants
    from transformers import AutoConfig

    from peftcode import shared_prompt
    from peftcode.placement import meta_model

    fields = dict(fields)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    model = meta_model(config, family)
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
    decoder = _width(config, "num_decoder_layers", default=0) if family == "seq2seq" else 0
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
        default_targets={
            name: list(mapping.get(config.model_type, []))
            for name, mapping in (
                ("lora", constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING),
                ("ia3", constants.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING),
                ("ia3_feedforward", constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING),
            )
        },
    )
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(shape.__dict__))
    return shape


def _targets(method: str, shape: Shape, configured: list[str] | None) -> list[str]:
    names = configured or shape.default_targets[method]
    return [n for n in shape.linears if any(n == t or n.endswith("." + t) for t in names)]


def trainable_tensors(shape: Shape, settings: dict) -> list[tuple[int, ...]]:
    """The shapes of the method's trainable tensors (for their gradients and optimizer state)."""
    kind, targets = settings["kind"], settings.get("target_modules", {})
    if kind == "full-ft":
        matrices = [(out, inp) for inp, out in shape.linears.values()]
        rest = shape.params - sum(a * b for a, b in matrices)
        return [*matrices, (rest,)]
    if kind in ("lora", "qlora-8bit", "qlora-4bit"):
        rank = settings["r"]
        adapted = _targets("lora", shape, targets.get("attention"))
        return [t for n in adapted for t in ((rank, shape.linears[n][0]), (shape.linears[n][1], rank))]
    if kind == "ia3":
        configured = (targets.get("attention") or []) + (targets.get("feedforward") or [])
        adapted = _targets("ia3", shape, configured or None)
        feedforward = targets.get("feedforward") or shape.default_targets["ia3_feedforward"]
        return [
            (shape.linears[n][0] if any(n.endswith("." + f) for f in feedforward) else shape.linears[n][1],)
            for n in adapted
        ]
    submodules = 2 if shape.family == "seq2seq" else 1
    if kind == "prompt-tuning":
        return [(settings["num_virtual_tokens"] * submodules, shape.hidden)]
    if kind == "prefix-tuning":
        return [(settings["num_virtual_tokens"], shape.decoder_layers * 2 * shape.hidden)]
    raise ValueError(f"method kind '{kind}' trains nothing")


def _layer_activation_bytes(shape: Shape, act: int, lora_inputs: int) -> float:
    """Bytes a layer saves for the backward pass, per token: its attention's query, keys, values and
    output (the input of the output projection too), its feed-forward's intermediate tensors, its two
    norms (which compute in float32), and the inputs LoRA's dropout copies."""
    h = shape.hidden
    attention = 3 * h + 2 * shape.kv
    feedforward = (4 if shape.gated else 2) * shape.intermediate + h
    norms = 2 * (h * act + 8 * h)
    return act * (attention + feedforward) + norms + lora_inputs * (act * h + h)


def _batch_shape(settings: dict, observed: dict | None) -> tuple[int, int]:
    """The padded length of the largest batch and its target tokens: as ``observed`` in a run
    (``longest_sequence``, ``most_target_tokens``), or at the configured maxima."""
    if observed:
        length, targets = observed["longest_sequence"], observed["most_target_tokens"]
    else:
        length = settings["max_input_length"] + settings["max_target_length"]
        targets = settings["batch_size"] * settings["max_target_length"]
    if settings["kind"] == "prompt-tuning":
        length += settings["num_virtual_tokens"]
    return length, targets


def finetune_peak(
    shape: Shape, settings: dict, device: str, precision: str, observed: dict | None = None
) -> dict:
    """A fine-tune's peak memory in MiB, by part. ``precision`` is resolved (fp32, bf16, fp16);
    ``observed`` is a run's largest batch (see :func:`_batch_shape`; the configured maxima without it)."""
    kind = settings["kind"]
    bits = (settings.get("quantization") or {}).get("bits")
    act = BYTES[precision]
    linear = sum(a * b for a, b in shape.linears.values())
    other = shape.params - linear
    if kind == "full-ft":
        weights = 4 * shape.params + (act * linear if precision != "fp32" else 0)
    elif bits:
        weights = QUANTIZED_BYTES[bits] * linear + 4 * other  # k-bit preparation: the rest in float32
    else:
        weights = BYTES[precision] * shape.params
    tensors = trainable_tensors(shape, settings)
    trainable = sum(math.prod(t) for t in tensors)
    if settings["optimizer"] == "adamw":
        state = 8 * trainable
    else:  # Adafactor: factored second moment of matrices, full of vectors
        state = 4 * sum(sum(t) if len(t) == 2 else t[0] for t in tensors)
    gradients = 4 * trainable

    length, targets = _batch_shape(settings, observed)
    batch = settings["batch_size"]
    lora_inputs = 0
    if kind in ("lora", "qlora-8bit", "qlora-4bit"):
        lora_inputs = len(_targets("lora", shape, None)) / max(shape.layers, 1)
    per_layer = _layer_activation_bytes(shape, act, lora_inputs)
    tokens = batch * length
    if settings["gradient_checkpointing"]:
        activations = tokens * (shape.layers * act * shape.hidden + per_layer)
        if bits == 8 and device == "cpu":
            # bitsandbytes' 8-bit matmul on the CPU (MatMul8bitFp) keeps its input on the autograd context,
            # where checkpointing does not reach: the inputs of the attention's and the feed-forward's
            # matrices stay for every layer.
            activations += tokens * shape.layers * act * (3 * shape.hidden + shape.intermediate)
    else:
        activations = tokens * shape.layers * per_layer
    # Logits in the compute dtype, their float32 copy (none when already float32), log-softmax and gradient.
    logits = targets * shape.vocab * (act + (8 if act == 4 else 12))
    runtime = RUNTIME_MIB[device] * MIB
    # On the CPU a checkpoint loaded in another dtype than it is stored in holds the file's pages and the
    # converted weights at once (on a GPU the file's pages are host memory); QLoRA's k-bit preparation
    # converts the weights it keeps in float32 the same way.
    loading = 0.0
    if device == "cpu":
        loaded = 4 if kind == "full-ft" else BYTES[precision]
        if bits and BYTES[precision] != 4:
            weights += BYTES[precision] * other
        elif not bits and loaded != shape.stored_bytes:
            loading = (shape.stored_bytes + loaded) * shape.params + runtime
    parts = {
        "weights": weights,
        "gradients": gradients,
        "optimizer": state,
        "activations": activations,
        "logits": logits,
        "runtime": runtime,
    }
    parts = {name: value / MIB for name, value in parts.items()}
    total = max(sum(parts.values()), loading / MIB)
    return {**parts, "loading": loading / MIB, "total": total, "trainable_params": trainable}


def inference_peak(shape: Shape, settings: dict, device: str, precision: str) -> dict:
    """Inference's peak memory in MiB, by part: weights, the key/value cache and scores of the beam search
    or of the sampler (whichever holds more), and the prompts' forward pass. Beams and draws read their
    prompt's keys and values from one copy where the model lets them (:func:`peftcode.shared_prompt.serves`;
    not for 8-bit models, nor where ``settings`` say ``trust_remote_code``: such a model's own code may not
    let them), each holding its new tokens' only; elsewhere each holds a copy."""
    act = BYTES[precision]
    bits = (settings.get("quantization") or {}).get("bits")
    linear = sum(a * b for a, b in shape.linears.values())
    weights = QUANTIZED_BYTES[bits] * linear + 4 * (shape.params - linear) if bits else act * shape.params
    shots = settings.get("shots", 0)
    prompt = (shots + 1) * settings["max_input_length"] + shots * settings["max_new_tokens"]
    new, batch = settings["max_new_tokens"], settings["batch_size"]
    shares = shape.shares_prompts and not settings.get("trust_remote_code") and bits != 8

    def cached_tokens(per_prompt: int) -> int:
        return batch * (prompt + per_prompt * new) if shares else batch * per_prompt * (prompt + new)

    continuations = [settings["num_beams"]]
    if settings.get("sampling"):
        continuations.append(settings["sampling"]["samples"])
    sequences = batch * max(continuations)
    tokens = max(cached_tokens(n) for n in continuations)
    cache = tokens * shape.decoder_layers * 2 * shape.kv * act
    scores = sequences * shape.vocab * 4 * 3  # logits, their log-softmax and the running sums
    prompt_pass = settings["batch_size"] * prompt * (shape.hidden + 2 * shape.intermediate) * act
    parts = {
        "weights": weights,
        "cache": cache,
        "scores": scores,
        "prompt": prompt_pass,
        "runtime": RUNTIME_MIB[device] * MIB,
    }
    parts = {name: value / MIB for name, value in parts.items()}
    return {**parts, "total": sum(parts.values())}


def model_fields(settings: dict) -> dict:
    """The config.json fields of a model, read without its weights: from the hub (config.json alone), a
    local directory, a GGUF file's metadata, or the config a built model is built from."""
    source = settings["source"]
    if "hub" in source:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        # Every snakemake call plans: a cached config.json spares compute nodes without network the hub's
        # retries.
        where = {"repo_id": source["hub"], "filename": "config.json", "revision": source.get("revision")}
        try:
            path = hf_hub_download(**where, local_files_only=True)
        except LocalEntryNotFoundError:
            path = hf_hub_download(**where)
        return json.loads(Path(path).read_text())
    if "path" in source:
        return json.loads((Path(source["path"]) / "config.json").read_text())
    return _converted_fields(json.dumps(settings, sort_keys=True))


@cache
def _converted_fields(settings_json: str) -> dict:
    """A GGUF or built model's config (a GGUF header, or a tokenizer for a built model's vocabulary, takes
    seconds to read: cached on disk by the settings and the file's size and time)."""
    settings = json.loads(settings_json)
    source = settings["source"]
    stamps = []
    for spec in (source, settings.get("tokenizer", {})):
        if "gguf" in spec:
            stat = (Path(gguf_location(spec["gguf"])[0]) / spec["gguf"]["file"]).stat()
            stamps.append([stat.st_size, stat.st_mtime_ns])
    key = hashlib.sha256(json.dumps([settings_json, stamps]).encode()).hexdigest()[:20]
    cached = CACHE / f"fields-{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    from transformers import AutoConfig

    from peftcode.models import load_tokenizer_from

    if "gguf" in source:
        directory, file = gguf_location(source["gguf"])
        fields = AutoConfig.from_pretrained(directory, gguf_file=file).to_dict()
    else:
        build = dict(source["build"])
        vocab = len(load_tokenizer_from(settings["tokenizer"]))
        fields = AutoConfig.for_model(build.pop("model_type"), vocab_size=vocab, **build).to_dict()
    fields.pop("quantization_config", None)
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(fields))
    return fields


def _local_rows(settings: dict, split: str) -> int | None:
    """Rows of a local or package dataset's split file (before any are dropped); None for a hub dataset,
    or for a file that cannot be read (its prepare_data job says why)."""
    try:
        return _count_rows(settings, split)
    except (ValueError, OSError):
        return None


def _count_rows(settings: dict, split: str) -> int | None:
    if split not in settings["splits"]:
        return 0
    if "package" in settings["source"]:
        from peftcode.data import package_file, read_file

        return len(read_file(package_file(settings["source"])).rows)
    if "path" not in settings["source"]:
        return None
    path = Path(settings["source"]["path"]) / f"{settings['splits'][split]}.{settings['format']}"
    if not path.is_file():
        return None
    if settings["format"] == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if settings["format"] == "json":
        return len(json.loads(path.read_text()))
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def resolved_precision(setting: str, device: str) -> str:
    """``auto`` as the plan reads it: bf16 on a GPU (assumed to have it), fp32 on the CPU."""
    if setting != "auto":
        return setting
    return "bf16" if device == "cuda" else "fp32"


def training_flops(shape: Shape, settings: dict, tokens: float) -> float:
    """2 FLOPs a parameter a token forward; backward 4 for trained weights, 2 for frozen ones (their input
    gradients only); gradient checkpointing recomputes the forward."""
    backward = 4 if settings["kind"] == "full-ft" else 2
    forward = 4 if settings["gradient_checkpointing"] else 2
    return (forward + backward) * shape.params * tokens


class Plan:
    """Each cell's estimated peak memory and compute, against the budget of the GPUs its jobs get."""

    def __init__(self, study):
        config = study.config
        resources = config["resources"]
        self.study = study
        self.gpus = resources["gpu"]
        self.device = "cuda" if self.gpus > 0 else "cpu"
        memory = resources.get("gpu_memory_gb")
        self.budget_mb = memory * max(self.gpus, 1) * 1024 if memory and self.gpus else None
        self.memory_gb = memory
        self.throughput = resources.get("throughput_tflops") or (40.0 if self.gpus else 0.1)
        self.shapes = {
            model: shape_of_config(
                model_fields(study.model_settings(model)), study.model_settings(model)["family"]
            )
            for model in sorted({cell.model for cell in study.all_cells})
        }
        self.rows = [self._estimate(cell) for cell in study.all_cells]

    def _examples(self, dataset: str, split: str) -> int | None:
        settings = self.study.config["datasets"][dataset]
        if "union" in settings:
            parts = [self._examples(member, split) for member in settings["union"]]
            return None if None in parts else sum(parts)
        limit = settings.get("limit", {}).get(split)
        count = settings.get("examples", {}).get(split) or _local_rows(settings, split)
        if count is None:
            return limit
        return min(limit, count) if limit else count

    def _estimate(self, cell) -> dict:
        study, shape = self.study, self.shapes[cell.model]
        infer = {
            **study.infer_settings(cell.model, cell.method, cell.dataset),
            "trust_remote_code": study.model_settings(cell.model).get("trust_remote_code", False),
        }
        precision = resolved_precision(infer["precision"], self.device)
        # Fewer prompts a batch where the configured batch's beams would not fit: batched beam search
        # returns the same candidates whatever the batch (tests/test_infer.py).
        batch = infer["batch_size"]
        inference = inference_peak(shape, infer, self.device, precision)
        while self.budget_mb is not None and inference["total"] > self.budget_mb and batch > 1:
            batch //= 2
            inference = inference_peak(shape, {**infer, "batch_size": batch}, self.device, precision)
        row = {
            "model": cell.model,
            "method": cell.method,
            "dataset": cell.dataset,
            "precision": precision,
            "generation_batch": batch,
            "infer_peak_mb": round(inference["total"]),
            "finetune_peak_mb": None,
            "trainable_params": 0,
            "train_tokens": None,
        }
        tests = self._examples(cell.dataset, "test")
        new_tokens = infer["max_new_tokens"] * (infer["sampling"] or {}).get("samples", infer["num_beams"])
        flops = 2 * shape.params * tests * new_tokens if tests else None
        if study.is_trained(cell.method):
            train_dataset = study.train_dataset(cell.method, cell.dataset)
            train = study.train_settings(cell.model, cell.method, train_dataset)
            peak = finetune_peak(
                shape, train, self.device, resolved_precision(train["precision"], self.device)
            )
            examples = self._examples(train_dataset, "train")
            tokens = (
                examples * (train["max_input_length"] + train["max_target_length"]) * train["epochs"]
                if examples
                else None
            )
            row.update(
                finetune_peak_mb=round(peak["total"]),
                trainable_params=peak["trainable_params"],
                train_tokens=tokens,
            )
            if flops is not None and tokens is not None:
                flops += training_flops(shape, train, tokens)
            elif tokens is None:
                flops = None
        needed = max(row["infer_peak_mb"], row["finetune_peak_mb"] or 0)
        row["fits"] = self.budget_mb is None or needed <= self.budget_mb
        row["budget_gb"] = self.memory_gb if self.budget_mb else None
        row["gpu_hours"] = None if flops is None else self._hours(flops)
        return row

    def _hours(self, flops: float) -> float:
        """GPU-hours (device-hours on the CPU): a model spread over several GPUs keeps all of them."""
        return flops / (self.throughput * 1e12) / 3600 * max(self.gpus, 1)

    # --- the budget -----------------------------------------------------------------------------------
    @property
    def over_budget(self) -> list[dict]:
        return [row for row in self.rows if not row["fits"]]

    def left_out(self, over_budget: str) -> frozenset:
        """The cells to leave out of the grid (``over_budget: skip``); stops at the first cell over the
        budget otherwise, with one line naming it and its estimate."""
        from peftcode.config import Cell, ConfigError

        rows = self.over_budget
        if rows and over_budget == "stop":
            row = rows[0]
            job, peak = max(
                ("fine-tune", row["finetune_peak_mb"] or 0),
                ("inference", row["infer_peak_mb"]),
                key=lambda j: j[1],
            )
            raise ConfigError(
                f"config error at resources.gpu_memory_gb: cell {row['model']} / {row['method']} / "
                f"{row['dataset']} needs about {peak / 1024:.1f} GB for its {job}, over the "
                f"{self.budget_mb / 1024:g} GB budget ({len(rows)} cells are); set over_budget: skip to "
                "leave such cells out"
            )
        return frozenset(Cell(row["model"], row["method"], row["dataset"]) for row in rows)

    def summary(self) -> str:
        fitting = [row for row in self.rows if row["fits"]]
        hours = [row["gpu_hours"] for row in fitting]
        known = [h for h in hours if h is not None]
        unit = "GPU-hours" if self.gpus else "CPU-hours"
        if self.budget_mb:
            total, left_out = len(self.rows), len(self.rows) - len(fitting)
            cells = f"Memory plan at {self.memory_gb:g} GB per GPU: {len(fitting)} of {total} cells fit"
            cells += f", {left_out} left out"
        else:
            where = "GPUs" if self.gpus else "the CPU"
            cells = f"Memory plan (no GPU memory budget, jobs on {where}): {len(self.rows)} cells"
        text = (
            f"{cells}; about {sum(known):.1f} {unit} (fine-tuning and inference, an upper bound from the "
            "datasets' sizes and maximum lengths"
        )
        return text + (
            f"; {len(hours) - len(known)} cells of unknown size)" if len(known) < len(hours) else ")"
        )

    def infer_settings(self, model: str, method: str, dataset: str) -> dict:
        """An inference job's settings, with the batch of prompts that fits the budget."""
        row = self._row(model, method, dataset)
        return {**self.study.infer_settings(model, method, dataset), "batch_size": row["generation_batch"]}

    # --- what jobs ask of the scheduler ------------------------------------------------------------------
    def _row(self, model: str, method: str, dataset: str) -> dict:
        """The row of a cell, or of the first cell a fine-tune on a union trains for."""
        members = self.study.config["datasets"][dataset].get("union", [dataset])
        return next(
            r for r in self.rows if (r["model"], r["method"], r["dataset"]) == (model, method, members[0])
        )

    def mem_mb(self, job: str, model: str, method: str | None = None, dataset: str | None = None) -> int:
        """Host memory for a job. A job on a GPU passes its weights through on their way (a shard at a time:
        at most 16 GB of them); on the CPU it holds its estimated peak, and its libraries' 2 GB. Preparing
        a model converts float32 weights (a hub model's are only downloaded)."""
        params = self.shapes[model].params
        if job == "prepare":
            hub = "hub" in self.study.config["models"][model]["source"]
            return int(4096 + (0 if hub else 8 * params / MIB))
        if self.gpus or job == "quantize":
            return int(4096 + min(4 * params / MIB, 16 * 1024))
        row = self._row(model, method, dataset)
        peak = row["finetune_peak_mb"] if job == "finetune" else row["infer_peak_mb"]
        return int(2048 + 1.25 * peak)

    def runtime_min(self, job: str, model: str, method: str | None = None, dataset: str | None = None) -> int:
        """Twice the estimated time and a quarter of an hour; four hours where the data's size is unknown."""
        if job == "quantize":
            return 60
        hours = self._row(model, method, dataset)["gpu_hours"]
        return 240 if hours is None else int(15 + 2 * 60 * hours / max(self.gpus, 1))


def write_plan(rows: list[dict], path) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)


def cache_configs(hf_home: str | Path, configs: dict[str, dict]) -> None:
    """Put models' config.json into a Hugging Face cache as a download would (a snapshot each, ``main``
    pointing at it), so that a study can be planned offline (``HF_HUB_OFFLINE=1``): the plan reads
    nothing else of a hub model."""
    for repo, fields in configs.items():
        folder = Path(hf_home) / "hub" / f"models--{repo.replace('/', '--')}"
        commit = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text(commit)
        (folder / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        (folder / "snapshots" / commit / "config.json").write_text(json.dumps(fields))
