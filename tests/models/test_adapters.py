"""Adapters trained elsewhere, evaluated like the study's own: one this study published to a hub (the local
one of tests/hub_server.py) and named back by its hub id gives the same generations and metrics as the cell
that trained it; an adapter whose base is not the cell's model stops the dry run with one line."""

import json

import pandas as pd
import pytest
import torch

from peftcode.models.adapters import AdapterError, base_mismatch, check_base_weights
from peftcode.study.settings import ModelSettings
from tests.helpers import REPO, prepared_tokenizer, read_yaml
from tests.hub_server import LocalHub
from tests.study_runs import snakemake, write_study

CODELLAMA = {"source": {"hub": "codellama/CodeLlama-7b-hf"}, "family": "causal"}
COMMIT = "a" * 40


@pytest.mark.parametrize(
    ("adapter", "model", "why"),
    [
        ({"base_model_name_or_path": "codellama/CodeLlama-7b-hf"}, CODELLAMA, None),
        ({"base_model_name_or_path": "CodeLlama/codellama-7b-HF"}, CODELLAMA, None),  # the hub ignores case
        ({"base_model_name_or_path": "bigcode/starcoder2-3b"}, CODELLAMA, "base is bigcode/starcoder2-3b"),
        (
            {"base_model_name_or_path": "codellama/CodeLlama-7b-hf", "revision": COMMIT},
            {**CODELLAMA, "source": {"hub": "codellama/CodeLlama-7b-hf", "revision": "b" * 40}},
            f"pinned at {'b' * 40}",
        ),
        # A branch on one side pins nothing to compare.
        (
            {"base_model_name_or_path": "codellama/CodeLlama-7b-hf", "revision": COMMIT},
            {**CODELLAMA, "source": {"hub": "codellama/CodeLlama-7b-hf", "revision": "main"}},
            None,
        ),
        (
            {"base_model_name_or_path": "codellama/CodeLlama-7b-hf"},
            {"source": {"path": "/m"}, "family": "causal"},
            "the model is /m",
        ),
        ({"task_type": "SEQ_2_SEQ_LM"}, CODELLAMA, "task type is SEQ_2_SEQ_LM"),
        # A base named by path (another study's prepared model) is checked by its weights' checksum later.
        ({"base_model_name_or_path": "/elsewhere/results/models/m"}, CODELLAMA, None),
    ],
)  # fmt: skip
def test_an_adapters_base_is_the_cells_model(adapter, model, why):
    found = base_mismatch(adapter, ModelSettings(**model))
    assert found is None if why is None else why in found


def fetched(tmp_path, base: dict):
    """A fetched local adapter (its manifest, and its folder with the base its export recorded)."""
    adapter, fetched = tmp_path / "adapter", tmp_path / "fetched"
    adapter.mkdir(exist_ok=True), fetched.mkdir(exist_ok=True)
    (adapter / "peftcode_prompt.json").write_text(json.dumps({"base": base}))
    (fetched / "peftcode_adapter.json").write_text(json.dumps({"hub": None, "path": str(adapter)}))
    return fetched


def test_an_adapter_over_other_weights_stops_its_inference(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"other weights")
    (model / "peftcode_model.json").write_text(json.dumps({"weights": "local", "hub": None}))
    with pytest.raises(AdapterError, match="trained on base weights of sha256 000000000000"):
        check_base_weights(fetched(tmp_path, {"sha256": "0" * 64}), model)
    hub = tmp_path / "hub-model"
    hub.mkdir()
    (hub / "peftcode_model.json").write_text(
        json.dumps({"weights": "hub", "hub": {"repo": "a/b", "commit": "c"}})
    )
    with pytest.raises(AdapterError, match="holds a hub model's"):
        check_base_weights(fetched(tmp_path, {"sha256": "0" * 64}), hub)
    check_base_weights(fetched(tmp_path, {"sha256": None}), model)  # a hub base: named and checked by id


def lora_study(results) -> dict:
    config = read_yaml(REPO / "tests" / "tiny.yaml")
    config["results"] = str(results)
    config["methods"] = {"lora": config["methods"]["lora"]}
    config["study"] = [{"models": ["tiny-llama"], "methods": ["lora"], "datasets": ["conala-style"]}]
    return config


def test_a_mismatched_base_stops_the_dry_run_with_one_line(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {"base_model_name_or_path": "bigcode/starcoder2-3b", "task_type": "CAUSAL_LM"}
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "LORA"}))
    study = lora_study(tmp_path / "results")
    study["methods"] = {"theirs": {"kind": "adapter", "source": {"path": str(adapter)}}}
    study["study"][0]["methods"] = ["theirs"]
    result = snakemake(write_study(study, tmp_path), "--dry-run")
    assert result.returncode != 0
    line = (
        "config error at methods.theirs: the adapter does not fit model 'tiny-llama': its base is "
        "bigcode/starcoder2-3b, and the model is a build model"
    )
    output = result.stdout + result.stderr  # Snakemake reports a parse error on standard output
    assert line in output.splitlines(), output[-3000:]


@pytest.mark.slow(minutes=1)  # two studies
def test_a_published_adapter_evaluated_by_its_hub_id_scores_as_the_cell_that_trained_it(tmp_path, tiny_llama):
    results = tmp_path / "results"
    trained = prepared_tokenizer(lora_study(results), tiny_llama)
    trained["publish"] = {
        "namespace": "lab",
        "cells": [{"model": "tiny-llama", "variant": "lora", "dataset": "conala-style"}],
    }
    evaluated = prepared_tokenizer(lora_study(results), tiny_llama)
    evaluated["methods"] = {
        "lab-lora": {"kind": "adapter", "source": {"hub": "lab/tiny-llama-lora-conala-style"}}
    }
    evaluated["study"][0]["methods"] = ["lab-lora"]
    for folder in ("trained", "evaluated"):
        (tmp_path / folder).mkdir()
    with LocalHub(tmp_path / "hub") as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_local", "HF_HOME": str(tmp_path / "hf")}
        done = snakemake(write_study(trained, tmp_path / "trained"), "--cores", "2", env=env)
        assert done.returncode == 0, done.stderr[-4000:]
        # The same results folder: the model and data are prepared, and only the adapter's cell runs.
        again = snakemake(write_study(evaluated, tmp_path / "evaluated"), "--cores", "2", env=env)
        assert again.returncode == 0, again.stderr[-4000:]
    manifest = json.loads((results / "adapters" / "lab-lora" / "peftcode_adapter.json").read_text())
    assert manifest["hub"]["repo"] == "lab/tiny-llama-lora-conala-style" and manifest["peft_type"] == "LORA"
    assert not list((results / "adapters").rglob("*.safetensors"))  # in the hub cache, not copied
    ours, theirs = (
        pd.read_parquet(results / "generations" / "tiny-llama" / method / "conala-style.parquet")
        for method in ("lora", "lab-lora")
    )
    assert ours["candidates"].map(list).tolist() == theirs["candidates"].map(list).tolist()
    ours, theirs = (
        json.loads((results / "metrics" / "tiny-llama" / method / "conala-style.json").read_text())
        for method in ("lora", "lab-lora")
    )
    scores = [key for key in ours if key.startswith(("em@", "codebleu"))]
    assert scores and {key: ours[key] for key in scores} == {key: theirs[key] for key in scores}
    assert theirs["kind"] == "adapter"
    # The adapter carried its fine-tune's probe, which the loaded model reproduced.
    memory = results / "generations" / "tiny-llama" / "lab-lora" / "conala-style.cost.json"
    memory = json.loads(memory.read_text())
    assert memory["checkpoint_probe_agreement"] == 1.0


@pytest.mark.slow(minutes=0.2)  # the study's prepare_model job, run by snakemake
def test_a_local_model_directory_is_used_where_it_is_and_an_adapter_checks_its_weights(tmp_path, tiny_llama):
    import shutil

    from peftcode.models.checkpoints import load_checkpoint
    from peftcode.models.export import base_reference
    from peftcode.models.prepare_model import prepare_model

    built = tmp_path / "built"
    shutil.copytree(tiny_llama, built)
    local = {"source": {"path": str(built)}, "family": "causal", "pretrained": False}
    manifest = prepare_model(ModelSettings(**local), tmp_path / "prepared")
    # No copy: the prepared folder holds the manifest alone, which names the directory and its weights.
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == ["peftcode_model.json"]
    assert manifest["weights"] == "path" and manifest["path"] == str(built.resolve())
    model, _ = load_checkpoint(tmp_path / "prepared", "causal", torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16  # in the precision the job asks for
    assert base_reference(tmp_path / "prepared") == {
        "name": str(built.resolve()),
        "revision": None,
        "sha256": manifest["sha256"],
    }
    check_base_weights(fetched(tmp_path, {"sha256": manifest["sha256"]}), tmp_path / "prepared")
    # The tiny study's own prepare_model job, on the same directory: no weights under results/models/.
    study = lora_study(tmp_path / "results")
    study["models"]["tiny-llama"] = {**local, "size_b": 0.003}
    done = snakemake(write_study(study, tmp_path), "--cores", "1", "--until", "prepare_model")
    assert done.returncode == 0, done.stderr[-3000:]
    prepared = tmp_path / "results" / "models" / "tiny-llama"
    assert [p.name for p in prepared.iterdir() if not p.name.startswith(".")] == ["peftcode_model.json"]
