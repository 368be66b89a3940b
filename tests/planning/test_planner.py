"""The memory plan: estimates from the real shapes of the paper's models, the budget's verdict on the
paper's grid, what a cell over budget does, and the estimator against measured peaks on this CPU."""

import copy
import json
import os
import pickle
import subprocess
import sys
from dataclasses import replace

import pytest

import peftcode.planning.plan as planner
from peftcode.data.prepare_data import prepare_data
from peftcode.planning.estimates import finetune_peak, inference_peak, per_gpu_peak
from peftcode.planning.shapes import Shape, model_fields, shape_of_config, uninitialised_meta_model
from peftcode.study.config import Study
from peftcode.study.settings import TrainSettings
from peftcode.study.validation import ConfigError, validate_config
from tests.helpers import REPO, SCHEMA, SMOLLM2, THREADS, decoding, paper_fields, read_yaml

PAPER = read_yaml(REPO / "studies" / "paper.yaml")


def shape(name: str) -> Shape:
    fields = paper_fields(name)
    return shape_of_config(fields, "seq2seq" if fields["model_type"] == "t5" else "causal")


def paper_plan(budget_gb: float) -> planner.Plan:
    config = copy.deepcopy(PAPER)
    config["resources"]["gpu_memory_gb"] = budget_gb
    return planner.Plan(Study(validate_config(config, SCHEMA)))


def settings_of(method: str, **overrides) -> TrainSettings:
    config = validate_config(copy.deepcopy(PAPER), SCHEMA)
    return replace(Study(config).train_settings("codellama-7b", method, "conala"), **overrides)


def test_the_paper_models_shapes_are_their_published_sizes():
    sizes = {
        name: shape(name).params / 1e9 for name in ("codegen-350m-mono", "codet5p-770m", "codellama-34b")
    }
    assert sizes == pytest.approx(
        {"codegen-350m-mono": 0.357, "codet5p-770m": 0.738, "codellama-34b": 33.74}, rel=0.01
    )


def test_the_planners_uninitialised_meta_models_are_the_meta_models_jobs_build():
    """Left uninitialised (a cold plan's time): the same parameters on the meta device, the same tied
    weights, and buffers of the same shapes (on the meta device too, which the plan counts, not reads)."""
    from transformers import AutoConfig

    from peftcode.hardware.placement import meta_model

    for name, family in (("codegen-350m-mono", "causal"), ("codet5p-220m", "seq2seq")):
        fields = paper_fields(name)
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        models = uninitialised_meta_model(config, family), meta_model(config, family)
        parameters = [[(k, p.shape, p.dtype, p.device.type) for k, p in m.named_parameters()] for m in models]
        buffers = [[(k, b.shape, b.dtype) for k, b in m.named_buffers()] for m in models]
        assert parameters[0] == parameters[1] and parameters[0][0][3] == "meta", name
        assert buffers[0] == buffers[1], name
        heads = [m.get_output_embeddings().weight is m.get_input_embeddings().weight for m in models]
        assert heads[0] == heads[1], name


def test_estimates_order_the_methods_as_their_memory_does():
    codellama = shape("codellama-7b")
    peak = {
        method: finetune_peak(codellama, settings_of(method), "cuda", "bf16")["total"]
        for method in ("full-ft", "lora", "qlora-8bit", "qlora-4bit")
    }
    assert peak["full-ft"] > peak["lora"] > peak["qlora-8bit"] > peak["qlora-4bit"]
    adamw = finetune_peak(codellama, settings_of("full-ft", optimizer="adamw"), "cuda", "bf16")
    adafactor = finetune_peak(codellama, settings_of("full-ft"), "cuda", "bf16")
    assert adamw["optimizer"] > 50 * adafactor["optimizer"]  # two states a weight against a factored one
    checkpointed = finetune_peak(codellama, settings_of("lora", gradient_checkpointing=True), "cuda", "bf16")
    assert (
        checkpointed["activations"]
        < finetune_peak(codellama, settings_of("lora"), "cuda", "bf16")["activations"] / 4
    )
    lora = finetune_peak(codellama, settings_of("lora"), "cuda", "bf16")
    assert lora["trainable_params"] == 4_194_304  # r 8 on q_proj and v_proj of 32 layers, as PEFT counts


def test_the_paper_grid_at_24_gb_keeps_what_fits_and_says_what_does_not():
    plan = paper_plan(24)
    fits = {(row["model"], row["variant"], row["dataset"]): row["fits"] for row in plan.rows}
    assert fits[
        ("codellama-34b", "qlora-4bit", "conala")
    ]  # the study's headline: QLoRA takes 34B under 24 GB
    assert not fits[("codellama-34b", "lora", "conala")]
    assert fits[("codellama-7b", "lora", "conala")] and not fits[("codellama-13b", "lora", "conala")]
    assert fits[("codet5p-770m", "full-ft", "codealpacapy")]
    study = Study(validate_config(copy.deepcopy(PAPER), SCHEMA), left_out=plan.left_out("skip"))
    assert len(study.cells) == sum(fits.values()) and study.left_out
    at_80 = paper_plan(80)
    assert sum(row["fits"] for row in at_80.rows) > sum(fits.values())
    assert "GPU-hours" in plan.summary() and "cells fit" in plan.summary()
    assert all(row["gpu_hours"] > 0 for row in plan.rows)


def test_draws_and_beams_hold_their_prompts_cache_once_unless_the_models_own_code_runs():
    """CodeLlama-7B in bf16 drawing 20 programs for each of 4 HumanEval-length prompts at once."""
    codellama = shape("codellama-7b")
    assert codellama.shares_prompts
    settings = decoding(max_input_length=512, max_new_tokens=128, batch_size=4, sampling={"samples": 20})
    shared = inference_peak(codellama, settings, "cuda", "bf16")
    copied = inference_peak(codellama, settings, "cuda", "bf16", trust_remote_code=True)
    per_token_mib = 32 * 2 * 4096 * 2 / 2**20  # layers x (keys, values) x width x 2 bytes
    assert shared["cache"] == pytest.approx((4 * 512 + 80 * 128) * per_token_mib)
    assert copied["cache"] == pytest.approx(80 * (512 + 128) * per_token_mib)
    assert shared["total"] < 24 * 1024 < copied["total"]
    # Beam search's cache where it holds more than the draws; its beams share their prompt too.
    beams = inference_peak(codellama, replace(settings, num_beams=40), "cuda", "bf16")
    assert beams["cache"] == pytest.approx((4 * 512 + 160 * 128) * per_token_mib)


def test_inference_takes_fewer_prompts_a_batch_rather_than_leaving_a_cell_out():
    cell = ("codellama-7b", "icl-3shot-seed42", "codealpacapy")
    at_16, at_24 = (
        {(r["model"], r["variant"], r["dataset"]): r for r in paper_plan(gb).rows} for gb in (16, 24)
    )
    assert at_16[cell]["fits"] and at_16[cell]["generation_batch"] < 8
    assert (
        at_24[cell]["generation_batch"] == at_24[("codellama-7b", "lora", "conala")]["generation_batch"] == 8
    )


def test_a_cell_over_budget_stops_the_run_naming_it_unless_told_to_skip(tiny_config):
    tiny_config["resources"] = {"gpu": 1, "gpu_memory_gb": 0.5}  # less than CUDA's own reserve
    config = validate_config(tiny_config, SCHEMA)
    plan = planner.Plan(Study(config))
    with pytest.raises(
        ConfigError, match=r"cell tiny-llama / .+ / .+ needs about 1\.\d GB .* over the 0\.5 GB budget"
    ):
        plan.left_out("stop")
    assert plan.left_out("skip") == frozenset(Study(config).all_cells)


def test_the_dry_run_prints_the_plan_and_the_reports_list_what_was_left_out(tiny_config, tmp_path):
    from tests.study_runs import snakemake, write_study

    tiny_config["results"] = str(tmp_path / "results")
    tiny_config["resources"] = {"gpu": 1, "gpu_memory_gb": 0.5}
    tiny_config["over_budget"] = "skip"
    result = snakemake(write_study(tiny_config, tmp_path), "--dry-run", "--quiet", "rules")
    assert result.returncode == 0, result.stderr[-2000:]
    cells = len(Study(validate_config(copy.deepcopy(tiny_config), SCHEMA)).all_cells)
    assert f"Memory plan at 0.5 GB per GPU: 0 of {cells} cells fit, {cells} left out" in result.stderr


def measured_own_peak(model_dir, data_dir, out, settings) -> dict:
    """A fine-tune in a fresh process, as Snakemake runs it: its peak is its own."""
    script = (
        "import pickle, sys, torch\nfrom peftcode.training.finetune import finetune\n"
        "torch.backends.mkldnn.enabled = False\n"
        "model, data, out, settings = sys.argv[1:]\n"
        "finetune(model, data, out + '/c', out + '/log.csv', out + '/cost.json',\n"
        "         pickle.loads(bytes.fromhex(settings)),\n"
        f"         threads={THREADS})"
    )
    # A fixed mmap threshold, so that the resident peak is live memory (see benchmarks/bench_plan.py). And
    # ATen's own kernels on every host: where the CPU has AVX-512, PyTorch computes bf16 with oneDNN, whose
    # kernels hold memory that the plan's CPU allowance, measured with ATen's, does not
    # (docs/gpu-and-clusters.md).
    subprocess.run(
        [sys.executable, "-c", script, str(model_dir), str(data_dir), str(out), pickle.dumps(settings).hex()],
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
        check=True,
        capture_output=True,
    )
    return json.loads((out / "cost.json").read_text())


@pytest.mark.slow(minutes=1)  # real fine-tunes, each measured in a fresh process
@pytest.mark.parametrize(
    ("model", "method", "precision"),
    [
        ("tiny-llama", "lora", "bf16"),
        ("tiny-llama", "full-ft", "fp32"),
        ("smollm2", "lora", "fp32"),
        ("smollm2", "qlora-4bit", "fp32"),
    ],
)
def test_the_estimate_is_within_a_quarter_of_the_measured_peak(
    model, method, precision, tmp_path, tiny_config, request
):
    """The measured peak less what the process held before loading (its libraries); the full table of
    methods and precisions is benchmarks/bench_plan.py's."""
    import torch

    from peftcode.models.quantize_model import quantize_model

    tiny_config["models"]["smollm2"] = copy.deepcopy(SMOLLM2)
    tiny_config["methods"]["qlora-4bit"] = {"kind": "qlora-4bit", "lr": 1e-3}
    tiny_config["study"][0]["methods"].append("qlora-4bit")
    study = Study(validate_config(tiny_config, SCHEMA))
    if model == "smollm2":
        base = request.getfixturevalue("smollm2")[0]
    else:
        base = request.getfixturevalue("tiny_llama")
    data = replace(study.data_settings("conala-style"), limit={"train": 16, "validation": 4, "test": 2})
    prepare_data(data, tmp_path / "data")
    settings = replace(study.train_settings(model, method, "conala-style"), precision=precision, batch_size=8)
    if settings.quantization:
        quantize_model(base, tmp_path / "quantized", "causal", settings.quantization, precision)
        base = tmp_path / "quantized"
    record = measured_own_peak(base, tmp_path / "data", tmp_path, settings)
    own = record["peak_rss_mb"] - record["baseline_rss_mb"]
    shape_of = shape_of_config(model_fields(study.model_settings(model)), "causal")
    estimate = finetune_peak(shape_of, settings, "cpu", precision, record)["total"]
    assert abs(estimate - own) / own < 0.25, (estimate, own, torch.backends.cpu.get_cpu_capability())


def test_a_retry_asks_for_more_memory_and_time_up_to_the_setting():
    config = validate_config(read_yaml(REPO / "tests" / "tiny.yaml"), SCHEMA)
    config["resources"]["retry_growth"] = 2.5
    plan = planner.Plan(Study(config))
    first = plan.mem_mb("finetune", "tiny-llama", "lora", "conala-style")
    runtime = plan.runtime_min("finetune", "tiny-llama", "lora", "conala-style")
    assert [plan.grown(first, attempt) for attempt in (1, 2, 3, 4)] == [
        first,
        2 * first,
        int(2.5 * first),
    ] + [int(2.5 * first)]
    assert plan.grown(runtime, 2) == 2 * runtime


def test_each_gpu_of_a_job_must_hold_its_share_not_the_pooled_sum():
    """CodeLlama-34B's LoRA fine-tune (a meta-device model of its config) over two GPUs: each holds half the
    weights, gradients, optimizer state and activations and a layer's weights more, and CUDA's context and
    the logits whole."""
    peak = finetune_peak(shape("codellama-34b"), settings_of("lora"), "cuda", "bf16")
    assert per_gpu_peak(peak, 1) == peak["total"]
    on_each = per_gpu_peak(peak, 2)
    whole = peak["runtime"] + peak["logits"]
    layer = peak["weights"] / 48  # CodeLlama-34B's layers
    assert peak["uneven"] == pytest.approx(layer)
    assert on_each == pytest.approx((peak["total"] - whole) / 2 + layer + whole)
    assert peak["total"] / 2 < on_each < peak["total"]

    def plan(budget_mb: float) -> planner.Plan:
        config = copy.deepcopy(PAPER)
        config["resources"].update(gpu=2, gpu_memory_gb=budget_mb / 1024)
        config["study"] = [{"models": ["codellama-34b"], "methods": ["lora"], "datasets": ["conala"]}]
        config["over_budget"] = "skip"
        return planner.Plan(Study(validate_config(config, SCHEMA)))

    planned = plan(on_each + 64)
    (row,) = planned.rows
    assert row["fits"] and row["finetune_per_gpu_mb"] == round(on_each)
    assert row["finetune_peak_mb"] > on_each + 64  # more than one GPU holds: it is spread over both
    # Between half the pooled sum and a GPU's share: two such GPUs pool enough, and neither holds its share.
    (row,) = plan((peak["total"] / 2 + on_each) / 2).rows
    assert not row["fits"]


def test_the_memory_record_holds_each_gpus_peak_and_their_sum(monkeypatch):
    import torch

    from peftcode.hardware import memory

    allocated, reserved = {0: 5 * 2**30, 1: 3 * 2**30}, {0: 6 * 2**30, 1: 4 * 2**30}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: allocated[device])
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device: reserved[device])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"GPU {device}")
    record = memory.JobMeter().snapshot()
    assert record["gpu_names"] == ["GPU 0", "GPU 1"] and record["device"] == "GPU 0"
    assert record["cuda_max_allocated_mb_per_gpu"] == [5120.0, 3072.0]
    assert record["cuda_max_reserved_mb_per_gpu"] == [6144.0, 4096.0]
    assert (record["cuda_max_allocated_mb"], record["cuda_max_reserved_mb"]) == (8192.0, 10240.0)
