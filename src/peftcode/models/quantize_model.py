"""A base model saved with its linear layers quantized by bitsandbytes (the ``quantize_model`` rule), for
QLoRA's fine-tune and inference jobs to load."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, BitsAndBytesConfig

from peftcode.hardware.memory import JobMeter, weight_footprint_mb
from peftcode.hardware.placement import MODEL_CLASSES, job_device, single_device_map
from peftcode.hardware.precision import Precision
from peftcode.hardware.precision import resolve as resolve_precision
from peftcode.models.checkpoints import (
    QuantizationError,
    bitsandbytes_problem,
    config_json,
    model_options,
    read_manifest,
    weights_location,
    write_manifest,
)


def quantization_problem(model_dir: str | Path, device: torch.device) -> str | None:
    """Why bitsandbytes cannot quantize the model of ``model_dir`` on ``device``, or None if it can. Reads
    only the model's config, so that a run that cannot work stops before loading any weights."""
    problem = bitsandbytes_problem(device)
    if problem is not None:
        return problem
    already = config_json(model_dir).get("quantization_config")
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
        out_dir / "cost.json",
        job="quantize",
        precision=resolved.name,
        weight_footprint_mb=weight_footprint_mb(model),
    )
