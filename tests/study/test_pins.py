"""Pinning a study to commits (peftcode.study.pins), against the local hub of tests/hub_server.py: every hub
model, dataset, adapter and dense encoder gets the commit the hub resolves it to, pinned sources stay as
they were, and the file keeps its comments and layout."""

import os
import subprocess
import sys

from tests.helpers import REPO, SCHEMA, read_yaml
from tests.hub_server import LocalHub

STUDY = """# A study to pin.
models:
  coder: {source: {hub: lab/coder}, family: causal}  # the model
  local: {source: {path: /models/local}, family: causal}
methods:
  rag: {kind: rag, shots: [1], retriever: dense, encoder: lab/encoder}
  theirs: {kind: adapter, source: {hub: lab/adapter, revision: main}}
datasets:
  conala:
    source: {hub: lab/conala}
    fields: {intent: nl, code: cmd}
  pinned:
    source: {hub: lab/pinned, revision: 0123456789abcdef0123456789abcdef01234567}
    fields: {intent: nl, code: cmd}
study:
  - {models: [coder], methods: [rag, theirs], datasets: [conala]}
"""


REPOSITORIES = (("models", "coder"), ("models", "encoder"), ("models", "adapter"), ("datasets", "conala"))


def test_a_study_is_pinned_to_the_commits_the_hub_resolves_and_keeps_its_layout(tmp_path):
    repos = tmp_path / "repos"
    for kind, name in REPOSITORIES:
        (repos / kind / "lab" / name).mkdir(parents=True)
        (repos / kind / "lab" / name / "README.md").write_text(name)
    study = tmp_path / "study.yaml"
    study.write_text(STUDY)
    with LocalHub(repos) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
        done = subprocess.run(
            [sys.executable, "-m", "peftcode.study.pins", str(study)],
            env=env,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        commits = {name: hub.commit(kind, f"lab/{name}") for kind, name in REPOSITORIES}
    config = read_yaml(study)
    assert config["models"]["coder"]["source"]["revision"] == commits["coder"]
    assert config["models"]["local"]["source"] == {"path": "/models/local"}
    assert config["methods"]["rag"]["encoder"] == f"lab/encoder@{commits['encoder']}"
    assert config["methods"]["theirs"]["source"]["revision"] == commits["adapter"]
    assert config["datasets"]["conala"]["source"]["revision"] == commits["conala"]
    assert config["datasets"]["pinned"]["source"]["revision"] == "0123456789abcdef0123456789abcdef01234567"
    text = study.read_text()
    assert text.startswith("# A study to pin.") and "# the model" in text
    assert "coder: {source: {hub: lab/coder, revision:" in text  # flow style kept
    assert len(done.stdout.splitlines()) == 4
    # The pinned file is still a valid study.
    from peftcode.study.validation import validate_config

    validate_config(config, SCHEMA)
