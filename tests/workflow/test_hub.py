"""The hub code paths, rehearsed without the network: a hub on localhost (tests/hub_server.py) serves a tiny
model and small datasets in the study's real formats under hub ids, and the tiny study runs from those ids
end to end. The model is downloaded once into the Hugging Face cache and never copied; once models and data
are prepared, the hub is stopped and the rest of the study still runs, from the cache, by commit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import REPO, read_yaml
from tests.hub_server import LocalHub
from tests.study_runs import planned_jobs, snakemake, write_study

pytestmark = pytest.mark.slow(minutes=1.5)  # the tiny study from a local hub, then offline

MODEL = "peftcode-test/tiny-llama"
REMOTE_CODE_MODEL = "peftcode-test/tiny-remote-code"
CONFIGURATION = """from transformers import LlamaConfig


class TinyRemoteConfig(LlamaConfig):
    model_type = "tiny-remote-code"
"""
MODELING = """from transformers import LlamaForCausalLM

from .configuration_tiny import TinyRemoteConfig



class TinyRemoteForCausalLM(LlamaForCausalLM):
    config_class = TinyRemoteConfig
"""
# A loading script, as the real repositories ship one: datasets refuses to run it, and data_files avoid it.
SCRIPT = "raise RuntimeError('a dataset loading script must not run')\n"


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def build_repositories(folder: Path, built: Path) -> Path:
    """The hub's repositories, in the real repositories' layouts and formats; the models' weights and
    tokenizer are those of ``built`` (the tiny study's model, the ``tiny_llama`` fixture)."""
    from peftcode.models.checkpoints import MANIFEST

    model = folder / "repos" / "models" / MODEL
    shutil.copytree(built, model, ignore=shutil.ignore_patterns(MANIFEST))
    remote = folder / "repos" / "models" / REMOTE_CODE_MODEL
    shutil.copytree(built, remote, ignore=shutil.ignore_patterns(MANIFEST))
    config = json.loads((remote / "config.json").read_text())
    config.update(
        model_type="tiny-remote-code",
        architectures=["TinyRemoteForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_tiny.TinyRemoteConfig",
            "AutoModelForCausalLM": "modeling_tiny.TinyRemoteForCausalLM",
        },
    )
    (remote / "config.json").write_text(json.dumps(config))
    (remote / "configuration_tiny.py").write_text(CONFIGURATION)
    (remote / "modeling_tiny.py").write_text(MODELING)

    datasets = folder / "repos" / "datasets" / "peftcode-test"
    # neulab/docprompting-conala: jsonl files per split beside its loading script.
    conala = [json.loads(line) for line in (REPO / "data" / "conala-style" / "train.jsonl").open()]
    (datasets / "conala").mkdir(parents=True)
    for name, rows in (
        ("conala-train", conala[:40]),
        ("conala-dev", conala[40:48]),
        ("conala-test", conala[48:54]),
    ):
        (datasets / "conala" / f"{name}.jsonl").write_text(jsonl(rows))
    (datasets / "conala" / "conala.py").write_text(SCRIPT)
    # antolin/codealpaca-filtered: parquet files under data/, splits train, valid and test.
    alpaca = pd.DataFrame(json.loads((REPO / "data" / "codealpaca-style" / "train.json").read_text()))
    (datasets / "codealpaca" / "data").mkdir(parents=True)
    for split, rows in (("train", alpaca[:24]), ("valid", alpaca[24:30]), ("test", alpaca[30:36])):
        rows.to_parquet(datasets / "codealpaca" / "data" / f"{split}-00000-of-00001.parquet", index=False)
    # codeparrot/apps: train.jsonl and test.jsonl beside its loading script apps.py.
    apps = [json.loads(line) for line in (REPO / "tests" / "fixtures" / "apps.jsonl").open()]
    train = [{**row, "problem_id": 100 * copy + row["problem_id"]} for copy in range(5) for row in apps]
    (datasets / "apps").mkdir(parents=True)
    (datasets / "apps" / "train.jsonl").write_text(jsonl(train))
    (datasets / "apps" / "test.jsonl").write_text(jsonl(apps))
    (datasets / "apps" / "apps.py").write_text(SCRIPT)
    return folder / "repos"


@pytest.fixture(scope="module")
def repositories(tmp_path_factory, tiny_llama):
    return build_repositories(tmp_path_factory.mktemp("hub"), tiny_llama)


def pointed_at(hub: LocalHub, folder: Path) -> dict[str, str]:
    """The environment that points a new process at ``hub``, with an empty cache in ``folder``."""
    return {"HF_ENDPOINT": hub.url, "HF_HOME": str(folder / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}


@pytest.fixture
def hub_env(repositories, tmp_path):
    """A running local hub, and the environment of a new process that uses it."""
    with LocalHub(repositories) as hub:
        yield hub, pointed_at(hub, tmp_path)


def study_from_hub(folder: Path) -> dict:
    config = read_yaml(REPO / "tests" / "tiny.yaml")
    config["results"] = str(folder / "results")
    config["models"] = {
        "tiny-llama": {"source": {"hub": MODEL, "revision": "main"}, "family": "causal", "pretrained": False}
    }
    config["methods"] = {key: config["methods"][key] for key in ("lora", "prompt-tuning", "icl")}
    config["methods"]["icl"] = {"kind": "icl", "shots": [0]}
    limits = {"max_input_length": 48, "max_target_length": 12}
    config["datasets"] = {
        "conala": {
            "source": {
                "hub": "peftcode-test/conala",
                "data_files": {
                    "train": "conala-train.jsonl",
                    "validation": "conala-dev.jsonl",
                    "test": "conala-test.jsonl",
                },
            },
            "fields": {"intent": "nl", "code": "cmd"},
            "stop": "\n",
            **limits,
        },
        "codealpaca": {
            "source": {"hub": "peftcode-test/codealpaca"},
            "splits": {"train": "train", "validation": "valid", "test": "test"},
            "fields": {"intent": "instruction", "input": "input", "code": "output"},
            **limits,
        },
        "apps": {
            "source": {
                "hub": "peftcode-test/apps",
                "data_files": {"train": "train.jsonl", "test": "test.jsonl"},
            },
            "preset": "apps",
            "splits": {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"},
            "fields": {
                "intent": "question",
                "input": "starter_code",
                "code": "solution",
                "tests": "test_cases",
                "difficulty": "difficulty",
            },
            "sampling": {"samples": 2},
            "max_input_length": 96,
            "max_target_length": 12,
        },
    }
    config["study"] = [
        # Trained on jsonl read through data files, and on APPS with pass@k; prompt tuning initialises
        # from the cached tokenizer; 0-shot ICL reads the parquet-only dataset too.
        {"models": ["tiny-llama"], "methods": ["prompt-tuning"], "datasets": ["conala"]},
        {"models": ["tiny-llama"], "methods": ["lora"], "datasets": ["apps"]},
        {"models": ["tiny-llama"], "methods": ["icl"], "datasets": ["codealpaca"]},
    ]
    return config


@pytest.fixture(scope="module")
def hub_study(repositories, tmp_path_factory):
    """The study from hub ids, tracked in MLflow: prepared while the hub runs, then run without it."""
    folder = tmp_path_factory.mktemp("hub-study")
    config = study_from_hub(folder)
    config["tracking"] = {"backend": "mlflow"}
    configfile = write_study(config, folder)
    with LocalHub(repositories) as hub:
        env = pointed_at(hub, folder)
        prepared = snakemake(configfile, "--cores", "2", "--until", "prepare_model", "prepare_data", env=env)
        assert prepared.returncode == 0, prepared.stderr[-4000:]
    # From here on the network is closed, as on a compute node: no parse of the Snakefile and no job may
    # open an internet socket, even one whose failure it would pass over.
    finished = snakemake(configfile, "--cores", "2", env={**env, **network_closed(folder)})
    assert finished.returncode == 0, finished.stderr[-6000:]
    assert (folder / "connects.log").read_text() == ""
    return hub, config, configfile, env


def network_closed(folder: Path) -> dict[str, str]:
    """The environment of processes in offline mode whose internet sockets cannot connect (see
    tests/network_closed/sitecustomize.py); ``folder/connects.log`` lists every attempt."""
    (folder / "connects.log").write_text("")
    closed = str(REPO / "tests" / "network_closed")
    return {
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, (closed, os.environ.get("PYTHONPATH")))),
        "PEFTCODE_CONNECTS_LOG": str(folder / "connects.log"),
    }


def test_the_tiny_study_runs_from_hub_ids_and_needs_the_hub_only_to_prepare(hub_study):
    hub, config, configfile, env = hub_study
    assert planned_jobs(configfile, env=env) == {}

    results = Path(config["results"])
    commit = hub.commit("models", MODEL)
    model_dir = results / "models" / "tiny-llama"
    written = sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(".snakemake"))
    assert written == ["peftcode_model.json"]  # no copy of the weights
    manifest = json.loads((model_dir / "peftcode_model.json").read_text())
    assert manifest["hub"] == {"repo": MODEL, "commit": commit} and manifest["weights"] == "hub"
    cached = Path(env["HF_HOME"]) / "hub" / "models--peftcode-test--tiny-llama" / "snapshots" / commit
    assert (cached / "model.safetensors").is_file()

    for dataset, kind in (("conala", "conala"), ("codealpaca", "codealpaca"), ("apps", "apps")):
        stats = json.loads((results / "data" / dataset / "stats.json").read_text())
        assert stats["commit"] == hub.commit("datasets", f"peftcode-test/{kind}")
    apps_stats = json.loads((results / "data" / "apps" / "stats.json").read_text())
    splits = apps_stats["splits"]
    # train[:90%] and train[90%:] of the 20 rows, some of them malformed as in the fixture.
    assert splits["train"]["rows"] + splits["train"]["dropped_rows"] == 18
    assert splits["validation"]["rows"] + splits["validation"]["dropped_rows"] == 2

    metrics = [json.loads(p.read_text()) for p in (results / "metrics").rglob("*.json")]
    assert len(metrics) == 3
    assert all(row["model_commit"] == commit for row in metrics)
    apps = next(row for row in metrics if row["dataset"] == "apps")
    assert "pass@1" in apps and apps["sandbox"] == "kernel isolation"
    assert (results / "reports" / "rq1.md").stat().st_size > 0


def test_mlflow_holds_a_run_per_cell_with_its_loss_curve_and_metrics(hub_study):
    from mlflow import MlflowClient

    _, config, _, _ = hub_study
    results = Path(config["results"])
    client = MlflowClient(f"sqlite:///{results / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("peftcode").experiment_id
    runs = {run.info.run_name: run for run in client.search_runs([experiment], max_results=1000)}
    assert len(runs) == len({run.data.tags["peftcode.cell"] for run in runs.values()})  # one per cell
    trained = sorted(path.parent for path in (results / "finetune").glob("*/*/*/train_log.csv"))
    assert [folder.parent.name for folder in trained] == ["lora", "prompt-tuning"]
    for folder in trained:
        run = runs["/".join(folder.relative_to(results / "finetune").parts)]
        log = pd.read_csv(folder / "train_log.csv")
        for column in ("train_loss", "val_loss"):
            curve = client.get_metric_history(run.info.run_id, column)
            assert [m.step for m in curve] == list(log.loc[log[column].notna(), "step"]), (folder, column)
        assert run.data.tags["variant"] == run.data.params["finetune.method"] == folder.parent.name
        memory = json.loads((folder / "cost.json").read_text())
        assert run.data.metrics["finetune/peak_rss_mb"] == memory["peak_rss_mb"]
        assert run.data.tags["peftcode.checkpoint"] == str((folder / "checkpoint").resolve())
    evaluated = sorted((results / "metrics").glob("*/*/*.json"))
    assert len(evaluated) == len(runs) == 3
    for path in evaluated:
        metrics = json.loads(path.read_text())
        run = runs[f"{metrics['model']}/{metrics['variant']}/{metrics['dataset']}"]
        assert run.data.metrics["em_at_1"] == metrics["em@1"] and run.info.status == "FINISHED"
        assert run.data.params["infer.kind"] == metrics["kind"]
        assert "evaluate.bootstrap_samples" in run.data.params


def in_a_fresh_process(code: str, env: dict) -> subprocess.CompletedProcess:
    """Run ``code`` with ``env``: huggingface_hub reads its endpoint once, when it is imported."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def test_remote_code_runs_only_where_the_config_allows_it(hub_env, tmp_path):
    _, env = hub_env
    result = in_a_fresh_process(
        f"""
        from peftcode.models.checkpoints import load_checkpoint
        from peftcode.models.prepare_model import prepare_model
        from peftcode.study.settings import ModelSettings

        settings = {{"source": {{"hub": "{REMOTE_CODE_MODEL}"}}, "family": "causal", "pretrained": False}}
        try:
            prepare_model(ModelSettings(**settings, trust_remote_code=False), "{tmp_path}/refused")
        except ValueError as error:
            assert "trust_remote_code" in str(error), error
        else:
            raise AssertionError("remote code ran without trust_remote_code")
        manifest = prepare_model(ModelSettings(**settings, trust_remote_code=True), "{tmp_path}/allowed")
        assert manifest["trust_remote_code"] is True and manifest["model_type"] == "tiny-remote-code"
        model, _ = load_checkpoint("{tmp_path}/allowed", "causal")
        print(type(model).__name__)
        """,
        env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("TinyRemoteForCausalLM")


def test_a_revision_the_hub_does_not_have_stops_with_its_name(hub_env, tmp_path):
    _, env = hub_env
    result = in_a_fresh_process(
        f"""
        from peftcode.models.prepare_model import prepare_model
        from peftcode.study.settings import ModelSettings

        source = {{"hub": "{MODEL}", "revision": "v9.9"}}
        prepare_model(ModelSettings(source=source, family="causal", pretrained=False), "{tmp_path}/model")
        """,
        env,
    )
    assert result.returncode != 0
    assert "RevisionNotFoundError" in result.stderr and "v9.9" in result.stderr
