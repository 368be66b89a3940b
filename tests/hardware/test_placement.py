"""Spreading a model over several GPUs, planned on a meta-device model of the real shape (no weights, no
GPU needed)."""

from collections import defaultdict

import pytest
import torch
from transformers import AutoConfig

from peftcode.hardware.placement import WEIGHTS_SHARE, PlacementError, meta_model, spread_device_map
from tests.helpers import paper_fields


def paper_model(name: str, family: str = "causal"):
    fields = paper_fields(name)
    return meta_model(AutoConfig.for_model(fields.pop("model_type"), **fields), family)


def bytes_per_device(model, device_map: dict, dtype: torch.dtype) -> dict:
    """Each device's share of the weights, from the module each parameter belongs to."""
    placed = defaultdict(int)
    size = torch.finfo(dtype).bits // 8
    for name, parameter in model.named_parameters():
        owner = max((m for m in device_map if m == "" or name == m or name.startswith(m + ".")), key=len)
        placed[device_map[owner]] += parameter.numel() * size
    return dict(placed)


def test_codellama_34b_spreads_over_two_80gb_gpus_with_every_layer_placed():
    model = paper_model("codellama-34b")
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(33.7e9, rel=0.01)
    device_map = spread_device_map(model, gpus=2, gpu_memory_gb=80, dtype=torch.bfloat16)
    assert set(device_map.values()) == {0, 1}
    layers = {f"model.layers.{i}" for i in range(48)}
    placed = {name for name in device_map if name.startswith("model.layers.")}
    # Each decoder layer whole on one GPU (or its parent module placed whole).
    assert placed <= layers and (placed == layers or "model" in device_map or "model.layers" in device_map)
    per_device = bytes_per_device(model, device_map, torch.bfloat16)
    assert sum(per_device.values()) == sum(p.numel() for p in model.parameters()) * 2
    assert all(size <= 80 * WEIGHTS_SHARE * 2**30 for size in per_device.values()), per_device
    assert min(per_device.values()) > 0.4 * sum(per_device.values())  # balanced, not one GPU filled first


def test_a_model_that_does_not_fit_says_so():
    with pytest.raises(PlacementError, match=r"do not fit in 2 x 24 GB"):
        spread_device_map(paper_model("codellama-34b"), gpus=2, gpu_memory_gb=24, dtype=torch.bfloat16)


def test_a_seq2seq_model_spreads_too():
    model = paper_model("codet5p-770m", "seq2seq")
    device_map = spread_device_map(model, gpus=2, gpu_memory_gb=2, dtype=torch.float32)
    assert set(device_map.values()) == {0, 1}
