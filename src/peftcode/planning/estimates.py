"""The memory model: a fine-tune's and an inference's peak memory, by part, and a fine-tune's FLOPs, from a
model's shape (:mod:`peftcode.planning.shapes`) and a cell's settings.

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
attention lets them (:mod:`peftcode.inference.shared_prompt`), each holding only its new tokens'.

Compute is the usual count, 2 FLOPs a parameter a token forward and 4 backward (2 for frozen weights, whose
gradients are not computed), plus a forward for gradient checkpointing, over the training tokens.
"""

from __future__ import annotations

import math

from peftcode.planning.shapes import PeftBuilt, Shape, peft_built
from peftcode.study.kinds import KINDS
from peftcode.study.peft_options import config_options, peft_type
from peftcode.study.settings import InferSettings, TrainSettings

MIB = 2**20
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
QUANTIZED_BYTES = {8: 1.0, 4: 0.52}  # per weight, quantization constants included
# What the runtime holds besides the job's tensors: on a GPU, CUDA's context, cuBLAS workspace and the
# allocator's fragmentation; on the CPU, the framework's buffers and the tokenizer (about 70 MiB on 2
# cores: the tiny model's whole fine-tune takes 105-140 MiB, see benchmarks/bench_plan.py).
RUNTIME_MIB = {"cuda": 1024, "cpu": 70}


def built(shape: Shape, settings: TrainSettings) -> PeftBuilt | None:
    """What PEFT builds for a fine-tune's method on the model (None for full fine-tuning)."""
    name = peft_type(settings.method_settings)
    return (
        None
        if name is None
        else peft_built(shape, name, config_options(settings.method_settings, settings.target_modules))
    )


def trainable_tensors(shape: Shape, adapter: PeftBuilt | None) -> list[tuple[int, ...]]:
    """The shapes of the trainable tensors (for their gradients and optimizer state): what PEFT builds
    (``adapter``, see :func:`built`), or every weight of a full fine-tune."""
    if adapter is not None:
        return [tuple(t) for t in adapter.trainable]
    matrices = [(out, inp) for inp, out in shape.linears.values()]
    rest = shape.params - sum(a * b for a, b in matrices)
    return [*matrices, (rest,)]


def _layer_activation_bytes(shape: Shape, act: int, lora_inputs: int) -> float:
    """Bytes a layer saves for the backward pass, per token: its attention's query, keys, values and
    output (the input of the output projection too), its feed-forward's intermediate tensors, its two
    norms (which compute in float32), and the inputs LoRA's dropout copies."""
    h = shape.hidden
    attention = 3 * h + 2 * shape.kv
    feedforward = (4 if shape.gated else 2) * shape.intermediate + h
    norms = 2 * (h * act + 8 * h)
    return act * (attention + feedforward) + norms + lora_inputs * (act * h + h)


def _batch_shape(settings: TrainSettings, observed: dict | None) -> tuple[int, int]:
    """The padded length of the largest batch and its target tokens: as ``observed`` in a run
    (``longest_sequence``, ``most_target_tokens``), or at the configured maxima."""
    if observed:
        length, targets = observed["longest_sequence"], observed["most_target_tokens"]
    else:
        length = settings.max_input_length + settings.max_target_length
        targets = settings.batch_size * settings.max_target_length
    if KINDS[settings.kind].input_tokens:
        length += settings.method_settings.num_virtual_tokens
    return length, targets


def finetune_peak(
    shape: Shape, settings: TrainSettings, device: str, precision: str, observed: dict | None = None
) -> dict:
    """A fine-tune's peak memory in MiB, by part. ``precision`` is resolved (fp32, bf16, fp16);
    ``observed`` is a run's largest batch (see :func:`_batch_shape`; the configured maxima without it)."""
    act = BYTES[precision]
    adapter = built(shape, settings)
    tensors = trainable_tensors(shape, adapter)
    trainable = sum(math.prod(t) for t in tensors)
    options = config_options(settings.method_settings, settings.target_modules) if adapter else {}
    weights = _weight_bytes(shape, settings, device, precision, adapter, options)
    if settings.optimizer == "adamw":
        state = 8 * trainable
    else:  # Adafactor: factored second moment of matrices, full of vectors
        state = 4 * sum(sum(t) if len(t) == 2 else t[0] for t in tensors)
    length, targets = _batch_shape(settings, observed)
    tokens = settings.batch_size * length
    per_layer = _layer_bytes(shape, act, adapter, options)
    runtime = RUNTIME_MIB[device] * MIB
    parts = {
        "weights": weights,
        "gradients": 4 * trainable,
        "optimizer": state,
        "activations": _activation_bytes(shape, settings, device, act, tokens, per_layer),
        # Logits in the compute dtype, their float32 copy (none when already float32), log-softmax and
        # gradient.
        "logits": targets * shape.vocab * (act + (8 if act == 4 else 12)),
        "runtime": runtime,
    }
    parts = {name: value / MIB for name, value in parts.items()}
    loading = _loading_bytes(shape, settings, device, precision, runtime)
    # With checkpointing, the layer being recomputed holds its activations whole, on one GPU.
    recomputed = tokens * per_layer if settings.gradient_checkpointing else 0.0
    return {
        **parts,
        "loading": loading / MIB,
        "total": max(sum(parts.values()), loading / MIB),
        "trainable_params": trainable,
        "uneven": (recomputed + weights / max(shape.layers, 1)) / MIB,
    }


def _weight_bytes(
    shape: Shape, settings: TrainSettings, device: str, precision: str, adapter, options
) -> float:
    """The model's weights as the fine-tune holds them: a full fine-tune's float32 master copy (and its
    matrices in the compute dtype), QLoRA's k-bit matrices, else the precision's dtype; with what the
    method adds."""
    bits = (settings.quantization or {}).get("bits")
    linear = sum(a * b for a, b in shape.linears.values())
    other = shape.params - linear
    if KINDS[settings.kind].full_weights:
        weights = 4 * shape.params + (BYTES[precision] * linear if precision != "fp32" else 0)
    elif bits:
        weights = QUANTIZED_BYTES[bits] * linear + 4 * other  # k-bit preparation: the rest in float32
    else:
        weights = BYTES[precision] * shape.params
    # Parameters and buffers the method adds that do not train (VeRA's shared projections), in float32.
    weights += 4 * adapter.frozen_added if adapter else 0
    if options.get("use_dora"):
        # DoRA's weight norm needs the adapted matrix in full, one layer at a time.
        weights += 4 * max(inp * out for inp, out in adapter.adapted)
    if device == "cpu" and bits and BYTES[precision] != 4:
        # QLoRA's k-bit preparation converts the weights it keeps in float32 from the loaded dtype.
        weights += BYTES[precision] * other
    return weights


def _layer_bytes(shape: Shape, act: int, adapter, options) -> float:
    """Activations one layer keeps for the backward pass, per token."""
    layers = max(shape.layers, 1)
    # LoRA's dropout copies the input of each layer it adapts.
    lora_inputs = len(adapter.adapted) / layers if options.get("lora_dropout") else 0
    per_layer = _layer_activation_bytes(shape, act, lora_inputs)
    if options.get("use_dora"):
        # DoRA computes each adapted layer's output again, scaled by its magnitudes, and keeps both outputs
        # for the backward pass.
        per_layer += 2 * act * sum(out for _, out in adapter.adapted) / layers
    return per_layer


def _activation_bytes(
    shape: Shape, settings: TrainSettings, device: str, act: int, tokens: int, per_layer: float
) -> float:
    """The activations of a batch's forward pass, kept for the backward (each layer's input only, with
    gradient checkpointing)."""
    if not settings.gradient_checkpointing:
        return tokens * shape.layers * per_layer
    activations = tokens * (shape.layers * act * shape.hidden + per_layer)
    if (settings.quantization or {}).get("bits") == 8 and device == "cpu":
        # bitsandbytes' 8-bit matmul on the CPU (MatMul8bitFp) keeps its input on the autograd context,
        # where checkpointing does not reach: the inputs of the attention's and the feed-forward's
        # matrices stay for every layer.
        activations += tokens * shape.layers * act * (3 * shape.hidden + shape.intermediate)
    return activations


def _loading_bytes(
    shape: Shape, settings: TrainSettings, device: str, precision: str, runtime: float
) -> float:
    """On the CPU, a checkpoint loaded in another dtype than it is stored in holds the file's pages and the
    converted weights at once (on a GPU the file's pages are host memory)."""
    if device != "cpu" or (settings.quantization or {}).get("bits"):
        return 0.0
    loaded = 4 if KINDS[settings.kind].full_weights else BYTES[precision]
    return (shape.stored_bytes + loaded) * shape.params + runtime if loaded != shape.stored_bytes else 0.0


def inference_peak(
    shape: Shape, settings: InferSettings, device: str, precision: str, trust_remote_code: bool = False
) -> dict:
    """Inference's peak memory in MiB, by part: weights, the key/value cache and scores of the beam search
    or of the sampler (whichever holds more), and the prompts' forward pass. Beams and draws read their
    prompt's keys and values from one copy where the model lets them
    (:func:`peftcode.inference.shared_prompt.serves`;
    not for 8-bit models, nor for a model run with ``trust_remote_code``: such a model's own code may not
    let them), each holding its new tokens' only; elsewhere each holds a copy."""
    act = BYTES[precision]
    bits = (settings.quantization or {}).get("bits")
    linear = sum(a * b for a, b in shape.linears.values())
    weights = QUANTIZED_BYTES[bits] * linear + 4 * (shape.params - linear) if bits else act * shape.params
    shots = settings.shots
    prompt = (shots + 1) * settings.max_input_length + shots * settings.max_new_tokens
    new, batch = settings.max_new_tokens, settings.batch_size
    shares = shape.shares_prompts and not trust_remote_code and bits != 8

    def cached_tokens(per_prompt: int) -> int:
        return batch * (prompt + per_prompt * new) if shares else batch * per_prompt * (prompt + new)

    continuations = [settings.num_beams]
    if settings.sampling:
        continuations.append(settings.sampling["samples"])
    sequences = batch * max(continuations)
    tokens = max(cached_tokens(n) for n in continuations)
    cache = tokens * shape.decoder_layers * 2 * shape.kv * act
    scores = sequences * shape.vocab * 4 * 3  # logits, their log-softmax and the running sums
    prompt_pass = settings.batch_size * prompt * (shape.hidden + 2 * shape.intermediate) * act
    parts = {
        "weights": weights,
        "cache": cache,
        "scores": scores,
        "prompt": prompt_pass,
        "runtime": RUNTIME_MIB[device] * MIB,
    }
    parts = {name: value / MIB for name, value in parts.items()}
    return {**parts, "total": sum(parts.values()), "uneven": weights / max(shape.layers, 1) / MIB}


# Parts of a peak that are spread with the model's layers over a job's GPUs; each GPU holds the others
# whole at worst: CUDA's context, and the logits and scores, and one layer's pass over the prompts, on the
# GPU that computes them. A peak's ``uneven`` is what a GPU may hold beyond an even share of the spread
# parts: a layer's weights more (the split is whole layers, each GPU filled up to its share and a layer),
# and with gradient checkpointing the activations of the layer being recomputed.
SPREAD_PARTS = ("weights", "gradients", "optimizer", "activations", "cache")
WHOLE_PARTS = ("runtime", "logits", "scores", "prompt")


def per_gpu_peak(peak: dict, gpus: int) -> float:
    """The most one of a job's ``gpus`` GPUs holds of ``peak`` (a fine-tune's or an inference's, in MiB by
    part), the model spread over them whole layers at a time and balanced
    (:mod:`peftcode.hardware.placement`)."""
    if gpus <= 1:
        return peak["total"]
    spread = sum(peak.get(part, 0.0) for part in SPREAD_PARTS)
    return spread / gpus + peak["uneven"] + sum(peak.get(part, 0.0) for part in WHOLE_PARTS)


def training_flops(shape: Shape, settings: TrainSettings, tokens: float) -> float:
    """2 FLOPs a parameter a token forward; backward 4 for trained weights, 2 for frozen ones (their input
    gradients only); gradient checkpointing recomputes the forward."""
    backward = 4 if KINDS[settings.kind].full_weights else 2
    forward = 4 if settings.gradient_checkpointing else 2
    return (forward + backward) * shape.params * tokens
