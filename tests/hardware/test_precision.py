"""Precision, the study's optimizer and gradient accumulation, on the tiny model on the CPU (bf16 and fp16
run there too)."""

import shutil
from dataclasses import replace

import pandas as pd
import pytest
import torch

from peftcode.data.prepare_data import prepare_data
from peftcode.hardware.precision import resolve
from peftcode.models.checkpoints import load_checkpoint
from peftcode.models.quantize_model import quantize_model
from peftcode.study.config import Study
from peftcode.study.validation import validate_config
from peftcode.training.finetune import finetune
from peftcode.training.steps import make_optimizer
from tests.helpers import REPO, SCHEMA, read_yaml


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_llama):
    folder = tmp_path_factory.mktemp("precision")
    config = validate_config(read_yaml(REPO / "tests" / "tiny.yaml"), SCHEMA)
    study = Study(config)
    shutil.copytree(tiny_llama, folder / "model")
    data = replace(study.data_settings("conala-style"), limit={"train": 32, "validation": 8, "test": 4})
    prepare_data(data, folder / "data")
    return study, folder


def run(workspace, name: str, method: str = "lora", **overrides) -> tuple[dict, pd.DataFrame]:
    study, folder = workspace
    settings = study.train_settings("tiny-llama", method, "conala-style")
    own = {key: overrides.pop(key) for key in ("dropout",) if key in overrides}  # the method's option
    settings = replace(settings, method_settings=replace(settings.method_settings, **own), **overrides)
    out = folder / name
    record = finetune(
        folder / "model", folder / "data", out / "checkpoint", out / "log.csv", out / "cost.json", settings
    )
    return record, pd.read_csv(out / "log.csv")


def test_the_setting_resolves_method_over_model_over_study(tiny_config):
    tiny_config["precision"] = "fp16"
    tiny_config["models"]["tiny-llama"]["precision"] = "bf16"
    tiny_config["methods"]["lora"]["precision"] = "fp32"
    study = Study(validate_config(tiny_config, SCHEMA))
    assert study.train_settings("tiny-llama", "lora", "conala-style").precision == "fp32"
    assert study.train_settings("tiny-llama", "ia3", "conala-style").precision == "bf16"
    assert study.configured_infer_settings("tiny-llama", "icl-0shot", "conala-style").precision == "bf16"
    del tiny_config["models"]["tiny-llama"]["precision"]
    study = Study(validate_config(tiny_config, SCHEMA))
    assert study.train_settings("tiny-llama", "ia3", "conala-style").precision == "fp16"


def test_auto_is_fp32_on_the_cpu_and_the_schema_defaults_are_the_studys(tiny_config):
    assert resolve("auto", torch.device("cpu")).name == "fp32"
    assert resolve("bf16", torch.device("cpu")).dtype == torch.bfloat16
    del tiny_config["training"]
    settings = Study(validate_config(tiny_config, SCHEMA)).train_settings(
        "tiny-llama", "lora", "conala-style"
    )
    assert (settings.optimizer, settings.warmup_ratio, settings.evals_per_epoch) == (
        "adafactor",
        0.05,
        5,
    )
    assert settings.precision == "auto" and settings.grad_accum_steps == 1


def test_a_bf16_lora_fine_tune_trains_in_half_the_weights_and_matches_fp32(workspace):
    fp32, fp32_log = run(workspace, "lora-fp32", precision="fp32")
    bf16, bf16_log = run(workspace, "lora-bf16", precision="bf16")
    assert bf16["precision"] == "bf16" and fp32["precision"] == "fp32"
    assert bf16["optimizer"] == "adamw" and bf16["grad_accum_steps"] == 1  # tiny.yaml's choices
    assert bf16["devices"] == ["cpu"] and bf16["model_commit"] is None  # built, not from the hub
    assert bf16["best_val_loss"] < bf16["initial_val_loss"]  # it trains
    ratio = bf16["weight_footprint_mb"] / fp32["weight_footprint_mb"]
    assert 0.49 < ratio < 0.56, ratio  # frozen weights in bf16, adapters in fp32
    final = [log["val_loss"].dropna().iloc[-1] for log in (fp32_log, bf16_log)]
    assert abs(final[1] - final[0]) / final[0] < 0.02, final


def test_adapters_stay_in_float32_over_bf16_weights(workspace):
    study, folder = workspace
    from peftcode.training.peft_setup import prepare_for_training

    settings = replace(study.train_settings("tiny-llama", "ia3", "conala-style"), precision="bf16")
    model, _ = load_checkpoint(folder / "model", "causal", torch.bfloat16)
    model = prepare_for_training(model, settings, str(folder / "model"))
    dtypes = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert dtypes == {torch.float32} and frozen == {torch.bfloat16}


def test_fp16_trains_with_a_gradient_scaler(workspace):
    record, log = run(workspace, "lora-fp16", precision="fp16")
    assert record["precision"] == "fp16"
    assert record["best_val_loss"] < record["initial_val_loss"]
    assert log["train_loss"].dropna().map(lambda loss: loss == loss).all()  # no NaN


def test_a_full_fine_tune_keeps_float32_master_weights_under_mixed_precision(workspace):
    fp32, _ = run(workspace, "full-fp32", method="full-ft", precision="fp32")
    bf16, _ = run(workspace, "full-bf16", method="full-ft", precision="bf16")
    assert bf16["weight_footprint_mb"] == fp32["weight_footprint_mb"]
    assert bf16["best_val_loss"] < bf16["initial_val_loss"]
    assert bf16["best_val_loss"] != fp32["best_val_loss"]  # computed in bf16, not silently in fp32


def test_qlora_computes_in_the_precision_unless_the_method_says_otherwise(workspace, tmp_path):
    _, folder = workspace
    four_bit = {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "auto"}
    quantize_model(folder / "model", tmp_path / "follows", "causal", four_bit, precision="bf16")
    quantize_model(
        folder / "model", tmp_path / "own", "causal", {**four_bit, "compute_dtype": "float32"}, "bf16"
    )
    for name, expected in (("follows", torch.bfloat16), ("own", torch.float32)):
        model, _ = load_checkpoint(tmp_path / name, "causal", torch.bfloat16)
        compute = {m.compute_dtype for m in model.modules() if hasattr(m, "compute_dtype")}
        assert compute == {expected}, (name, compute)


def test_accumulated_batches_give_the_larger_batchs_loss_curve(workspace):
    # No dropout, so both runs compute the same function; the data order is drawn per optimizer step.
    whole, whole_log = run(workspace, "batch8", lr=1e-2, dropout=0.0, batch_size=8, grad_accum_steps=1)
    split, split_log = run(workspace, "batch4x2", lr=1e-2, dropout=0.0, batch_size=4, grad_accum_steps=2)
    assert whole["steps"] == split["steps"] == 4 and split["grad_accum_steps"] == 2
    for column in ("train_loss", "val_loss"):
        pd.testing.assert_series_equal(whole_log[column], split_log[column], rtol=1e-4, check_exact=False)
    assert (whole_log["tokens"] == split_log["tokens"]).all()


def test_adafactor_trains_and_keeps_less_state_than_adamw(workspace):
    study, folder = workspace
    record, _ = run(workspace, "adafactor", optimizer="adafactor", lr=1e-2, warmup_ratio=0.05)
    assert record["optimizer"] == "adafactor" and record["best_val_loss"] < record["initial_val_loss"]
    settings = study.train_settings("tiny-llama", "full-ft", "conala-style")
    sizes = {}
    for name in ("adamw", "adafactor"):
        model, _ = load_checkpoint(folder / "model", "causal")
        optimizer = make_optimizer(replace(settings, optimizer=name), list(model.parameters()))
        for parameter in model.parameters():
            parameter.grad = torch.ones_like(parameter)
        optimizer.step()
        sizes[name] = sum(
            value.numel()
            for state in optimizer.state.values()
            for value in state.values()
            if torch.is_tensor(value)
        )
    weights = sum(p.numel() for p in model.parameters())
    assert sizes["adamw"] >= 2 * weights and sizes["adafactor"] < 0.6 * weights, (sizes, weights)
