"""Today's PEFT methods by config alone: DoRA, rsLoRA, PiSSA (LoRA's options handed to LoraConfig as they
are) and VeRA (any PEFT type by name) run through the tiny DAG to the reports, each a method of its own;
options LoraConfig would refuse stop the dry run with one line; AdaLoRA allocates its rank budget during
the fine-tune and its regulariser is in the loss."""

import json
from dataclasses import replace

import pandas as pd
import pytest
import torch

from tests.helpers import REPO, prepared_tokenizer, read_yaml, tiny_workspace
from tests.study_runs import snakemake, write_study

pytestmark = pytest.mark.slow(minutes=1.5)  # the tiny study with today's PEFT methods

LORA = {"lr": 1.0e-2, "r": 8, "alpha": 16, "dropout": 0.05}
# Plain LoRA's cells are the tiny study's (tests/workflow/test_workflow.py); rsLoRA trains as many weights.
METHODS = {
    "dora": {"kind": "lora", **LORA, "peft": {"use_dora": True}},
    "rslora": {"kind": "lora", **LORA, "peft": {"use_rslora": True}},
    "pissa": {"kind": "lora", **LORA, "dropout": 0.0, "peft": {"init_lora_weights": "pissa"}},
    "vera": {"kind": "peft", "peft_type": "VERA", "lr": 1.0e-2, "peft": {"r": 16}},
}


def methods_study(results) -> dict:
    config = read_yaml(REPO / "tests" / "tiny.yaml")
    config["results"] = str(results)
    config["methods"] = METHODS
    config["study"] = [{"models": ["tiny-llama"], "methods": list(METHODS), "datasets": ["conala-style"]}]
    return config


@pytest.fixture(scope="module")
def methods_run(tmp_path_factory, tiny_llama):
    folder = tmp_path_factory.mktemp("methods")
    config = prepared_tokenizer(methods_study(folder / "results"), tiny_llama)
    result = snakemake(write_study(config, folder), "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:]
    return folder / "results"


def test_each_method_is_a_method_of_its_own_in_every_table_and_figure(methods_run):
    table = pd.read_parquet(methods_run / "results.parquet").set_index("method")
    assert sorted(table.index) == sorted(METHODS)
    assert table.loc["dora", "kind"] == "lora" and table.loc["vera", "kind"] == "peft"
    # What PEFT built differs: DoRA's magnitude vectors, VeRA's few scaling vectors.
    params = table["trainable_params"]
    assert params["dora"] > params["rslora"] == params["pissa"] > params["vera"] > 0
    rq1 = (methods_run / "reports" / "rq1.md").read_text()
    for method in METHODS:
        assert f"| {method} " in rq1, method
    for method in METHODS:
        log = pd.read_csv(methods_run / "finetune" / "tiny-llama" / method / "conala-style" / "train_log.csv")
        assert log["val_loss"].min() < log["val_loss"].iloc[0], method  # each trained
    # Every inference reloaded what its fine-tune kept (PiSSA's adapter converted to the original weights).
    for method in METHODS:
        record = methods_run / "generations" / "tiny-llama" / method / "conala-style.cost.json"
        assert json.loads(record.read_text())["checkpoint_probe_agreement"] >= 0.9, method


UNKNOWN = "LoraConfig has no option 'use_dorra' (did you mean 'use_dora'?)"
ILL_TYPED = "'yes' is not a valid LoraConfig.use_dora (expected \"bool\")"


@pytest.mark.parametrize(
    ("peft", "line"),
    [
        ({"use_dorra": True}, f"config error at methods.lora.peft.use_dorra: {UNKNOWN}"),
        ({"use_dora": "yes"}, f"config error at methods.lora.peft.use_dora: {ILL_TYPED}"),
    ],
)
def test_an_option_the_config_class_would_refuse_stops_the_dry_run_with_one_line(tmp_path, peft, line):
    config = methods_study(tmp_path / "results")
    config["methods"] = {"lora": {"kind": "lora", **LORA, "peft": peft}}
    config["study"][0]["methods"] = ["lora"]
    result = snakemake(write_study(config, tmp_path), "--dry-run")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and line in output.splitlines(), output[-3000:]


def test_adalora_allocates_its_rank_budget_and_its_regulariser_is_in_the_loss(tmp_path, tiny_llama):
    from peftcode.models.checkpoints import load_checkpoint
    from peftcode.study.settings import MethodSettings
    from peftcode.training.finetune import finetune
    from peftcode.training.peft_setup import loss_term, prepare_for_training

    study = tiny_workspace(tmp_path, {"train": 32, "validation": 4, "test": 2}, tiny_llama)
    adalora = {"kind": "peft", "peft_type": "ADALORA", "lr": 1.0e-2}
    adalora["peft"] = {
        "init_r": 6,
        "target_r": 2,
        "tinit": 1,
        "tfinal": 1,
        "deltaT": 1,
        "orth_reg_weight": 0.5,
    }
    lora = study.train_settings("tiny-llama", "lora", "conala-style")
    settings = replace(
        lora,
        method="adalora",
        method_settings=MethodSettings(**adalora),
        lr=1.0e-2,
        batch_size=2,
        evals_per_epoch=1,
    )
    finetune(tmp_path / "model", tmp_path / "conala-style", tmp_path / "out", tmp_path / "log.csv",
             tmp_path / "cost.json", settings)  # fmt: skip
    saved = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    ranks = saved["rank_pattern"]
    # The budget went from 6 per layer to 2 on average, unevenly: PEFT's allocation ran.
    assert (
        ranks and sum(map(sum, ranks.values())) < 6 * len(ranks) and len({sum(r) for r in ranks.values()}) > 1
    )

    model, _ = load_checkpoint(tmp_path / "model", "causal")
    model = prepare_for_training(model, settings, str(tmp_path / "model"), total_steps=16)
    term = loss_term(model)
    assert isinstance(term, torch.Tensor) and term.item() > 0 and term.requires_grad
