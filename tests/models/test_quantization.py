"""QLoRA settings, and runs that bitsandbytes cannot serve stopping before any weights load."""

import json

import pytest
import torch

from peftcode.models.checkpoints import QuantizationError, load_checkpoint, write_manifest
from peftcode.models.quantize_model import quantization_problem, quantize_model
from peftcode.study.config import Study
from peftcode.study.validation import validate_config
from tests.helpers import SCHEMA

QLORA_4BIT = {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}


def test_qlora_methods_get_the_paper_lora_settings_and_their_quantization(tiny_config):
    tiny_config["methods"] = {
        "qlora-8bit": {"kind": "qlora-8bit"},
        "qlora-4bit": {"kind": "qlora-4bit", "compute_dtype": "bfloat16"},
        "lora": {"kind": "lora"},
    }
    tiny_config["study"] = [
        {
            "models": ["tiny-llama"],
            "methods": ["qlora-8bit", "qlora-4bit", "lora"],
            "datasets": ["conala-style"],
        }
    ]
    study = Study(validate_config(tiny_config, SCHEMA))
    four = study.train_settings("tiny-llama", "qlora-4bit", "conala-style")
    entry = four.method_settings
    assert (four.lr, entry.r, entry.alpha, entry.dropout) == (3e-4, 8, 16, 0.05)
    assert four.quantization == {
        "bits": 4,
        "quant_type": "nf4",
        "double_quant": True,
        "compute_dtype": "bfloat16",
    }
    assert four.gradient_checkpointing is True
    eight = study.train_settings("tiny-llama", "qlora-8bit", "conala-style")
    assert eight.quantization == {"bits": 8}
    lora = study.train_settings("tiny-llama", "lora", "conala-style")
    assert lora.quantization is None and lora.gradient_checkpointing is False
    # Inference quantizes the base model exactly as training did.
    assert (
        study.configured_infer_settings("tiny-llama", "qlora-4bit", "conala-style").quantization
        == four.quantization
    )


def test_quantization_options_are_checked(tiny_config):
    tiny_config["methods"]["qlora-8bit"] = {"kind": "qlora-8bit", "quant_type": "nf4"}
    with pytest.raises(ValueError, match="methods.qlora-8bit"):
        validate_config(tiny_config, SCHEMA)


@pytest.fixture
def gptq_checkpoint(tmp_path):
    """A checkpoint's config that says its weights are GPTQ-quantized; no weights at all."""
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "llama", "quantization_config": {"quant_method": "gptq", "bits": 4}})
    )
    write_manifest(tmp_path, {"weights": "local", "trust_remote_code": False, "hub": None})
    return tmp_path


def test_qlora_on_an_already_quantized_model_stops_before_loading_it(gptq_checkpoint, tmp_path):
    # Had it tried to load, the missing weights would raise an OSError instead.
    with pytest.raises(QuantizationError, match="already quantized with 'gptq'"):
        quantize_model(gptq_checkpoint, tmp_path / "out", "causal", QLORA_4BIT)
    assert not (tmp_path / "out").exists()


def test_qlora_on_a_device_bitsandbytes_cannot_serve_says_so(gptq_checkpoint, tmp_path, monkeypatch):
    import peftcode.models.checkpoints
    import peftcode.models.quantize_model

    for module in (peftcode.models.checkpoints, peftcode.models.quantize_model):
        monkeypatch.setattr(module, "job_device", lambda: torch.device("meta"))
    with pytest.raises(QuantizationError, match="cannot run on device 'meta'"):
        quantize_model(gptq_checkpoint, tmp_path / "out", "causal", {"bits": 8})
    # A checkpoint quantized elsewhere stops the same way before its weights load.
    config = json.loads((gptq_checkpoint / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (gptq_checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(QuantizationError, match="QLoRA base model .* cannot run on device 'meta'"):
        load_checkpoint(gptq_checkpoint, "causal")


def test_qlora_without_bitsandbytes_says_how_to_install_it(gptq_checkpoint, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "bitsandbytes" else real(name)
    )
    assert "pip install bitsandbytes" in quantization_problem(gptq_checkpoint, torch.device("cpu"))
