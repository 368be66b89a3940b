"""Where a job's model goes: the job's device, or, with more than one GPU, its layers spread over the job's
GPUs so that none holds more than its share of ``resources.gpu_memory_gb``.

The spread is accelerate's (``infer_auto_device_map``), computed on a meta-device model of the real shape,
so that it can be planned, and tested, without the weights or the GPUs.
"""

from __future__ import annotations

import torch
import transformers
from accelerate import infer_auto_device_map, init_empty_weights
from accelerate.utils import get_balanced_memory
from transformers import AutoConfig

from peftcode.study.families import FAMILIES

MODEL_CLASSES = {name: getattr(transformers, family.auto_class) for name, family in FAMILIES.items()}
# Of each GPU's memory, the share its weights may take; the rest holds activations, adapters and their
# optimizer state.
WEIGHTS_SHARE = 0.85


class PlacementError(RuntimeError):
    """A model that does not fit on the job's GPUs."""


def job_device() -> torch.device:
    """Where a job computes: the first GPU it sees when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def single_device_map(device: torch.device) -> dict:
    return {"": device.index or 0} if device.type == "cuda" else {"": device.type}


def meta_model(config, family: str, trust_remote_code: bool = False):
    """A model of ``config``'s shape on the meta device: parameters without memory."""
    with init_empty_weights():
        model = MODEL_CLASSES[family].from_config(config, trust_remote_code=trust_remote_code)
    model.tie_weights()
    return model


def spread_device_map(model, gpus: int, gpu_memory_gb: float, dtype: torch.dtype) -> dict[str, int]:
    """Each module of ``model`` (on the meta device) -> the GPU it goes on, whole layers at a time, the
    weights in ``dtype`` balanced over the GPUs, none holding more than ``WEIGHTS_SHARE`` of its
    ``gpu_memory_gb``."""
    budget = {index: int(gpu_memory_gb * WEIGHTS_SHARE * 2**30) for index in range(gpus)}
    layers = model._no_split_modules
    # Balanced: each GPU takes its part of the weights, leaving each room for its part of the activations.
    balanced = get_balanced_memory(model, max_memory=budget, no_split_module_classes=layers, dtype=dtype)
    device_map = infer_auto_device_map(
        model, max_memory=balanced | {"cpu": 0}, no_split_module_classes=layers, dtype=dtype
    )
    off_gpu = sorted({str(device) for device in device_map.values() if not isinstance(device, int)})
    if off_gpu:
        size = sum(p.numel() for p in model.parameters()) * torch.finfo(dtype).bits / 8 / 2**30
        raise PlacementError(
            f"{size:.1f} GB of weights in {dtype} do not fit in {gpus} x {gpu_memory_gb} GB "
            f"({WEIGHTS_SHARE:.0%} of each for weights): ask for more GPUs (resources.gpu) or quantize"
        )
    return device_map


def device_map_for(
    location: str, options: dict, family: str, gpus: int, gpu_memory_gb: float | None, dtype: torch.dtype
) -> dict:
    """The device map a job loads its model with: its one device, or a spread over its ``gpus`` GPUs
    (each of ``gpu_memory_gb``, else of the memory CUDA reports)."""
    device = job_device()
    if gpus <= 1 or device.type != "cuda":
        return single_device_map(device)
    memory = gpu_memory_gb or min(
        torch.cuda.get_device_properties(i).total_memory / 2**30 for i in range(gpus)
    )
    config = AutoConfig.from_pretrained(location, **options)
    return spread_device_map(
        meta_model(config, family, options.get("trust_remote_code", False)), gpus, memory, dtype
    )
