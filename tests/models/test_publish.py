"""A fine-tune published to a hub (the local one of tests/hub_server.py) comes back as it went: downloaded
and loaded with plain PEFT it generates what it generated before; a rerun with nothing changed uploads
nothing; the repository is private and its card holds the evaluation's metrics."""

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from peftcode.study.config import Study
from peftcode.study.validation import ConfigError, validate_config
from peftcode.training.finetune import finetune
from tests.helpers import REPO, SCHEMA, read_yaml, tiny_workspace
from tests.hub_server import LocalHub
from tests.study_runs import planned_jobs, write_study

HUB_SIDE = """
import json, sys
from huggingface_hub import HfApi, ModelCard, snapshot_download
from peftcode.models.publish import publish
from tests.helpers import greedy

checkpoint, metrics, out = sys.argv[1:]
first = publish(checkpoint, "lab/tiny-lora", [metrics], out)
downloaded = snapshot_download("lab/tiny-lora", revision=first["commit"])
card = ModelCard.load(f"{downloaded}/README.md")
again = publish(checkpoint, "lab/tiny-lora", [metrics], out)
print(json.dumps({
    "private": HfApi().model_info("lab/tiny-lora").private,
    "first": first["commit"], "again": again["commit"],
    "same_output": greedy(downloaded) == greedy(checkpoint),
    "library": card.data.library_name, "card": card.text,
}))
"""


def test_a_published_adapter_comes_back_as_it_went_and_a_rerun_uploads_nothing(tmp_path, tiny_llama):
    study = tiny_workspace(tmp_path, {"train": 8, "validation": 2, "test": 2}, tiny_llama)
    settings = replace(study.train_settings("tiny-llama", "lora", "conala-style"), batch_size=4)
    checkpoint = tmp_path / "checkpoint"
    finetune(
        tmp_path / "model", tmp_path / "conala-style", checkpoint, tmp_path / "log", tmp_path / "m", settings
    )
    metrics = tmp_path / "metrics.json"
    metrics.write_text(
        json.dumps({"dataset": "conala-style", "em@1": 0.25, "em@1_ci_low": 0.0, "em@1_ci_high": 0.5})
    )
    with LocalHub(tmp_path / "hub") as hub:
        # huggingface_hub reads its endpoint once, when it is imported: a process of its own.
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_local", "HF_HOME": str(tmp_path / "hf")}
        done = subprocess.run(
            [sys.executable, "-c", HUB_SIDE, str(checkpoint), str(metrics), str(tmp_path / "published.json")],
            env=env, capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        commits = [request for request in hub.requests if "/commit/" in request]
    assert result["private"] is True and result["same_output"] and result["library"] == "peft"
    assert "| conala-style | em@1 | 0.250 | [0.000, 0.500] |" in result["card"]
    # The rerun found every file unchanged: the same commit, and one commit request in all.
    assert result["again"] == result["first"] and len(commits) == 1


def test_the_study_publishes_the_fine_tunes_it_names_and_says_which_cell_it_cannot(tmp_path):
    config = read_yaml(REPO / "tests" / "tiny.yaml")
    config["publish"] = {
        "namespace": "lab",
        "cells": [{"model": "tiny-llama", "variant": "lora", "dataset": "conala-style"}],
    }
    study = Study(validate_config(config, SCHEMA))
    (tune, target), *others = study.published().items()
    assert others == [] and target["repo"] == "lab/tiny-llama-lora-conala-style" and target["private"] is True
    assert target["evaluated"] and all(study.fine_tune(cell) == tune for cell in target["evaluated"])
    planned = planned_jobs(write_study(config, tmp_path))
    assert planned["publish"] == 1
    config["publish"]["cells"] = [{"model": "tiny-llama", "variant": "icl-0shot", "dataset": "conala-style"}]
    with pytest.raises(ConfigError, match=r"publish.cells\[0\]: .*icl-0shot.* is no fine-tuned cell"):
        Study(validate_config(config, SCHEMA)).published()
