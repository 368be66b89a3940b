"""A study configuration checked before any job runs: against the schema (which fills in its defaults),
its names against each other, and each method's PEFT options against PEFT's classes. Every error is one
line naming the key."""

from __future__ import annotations

from pathlib import Path

import jsonschema
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from peftcode.study.kinds import TRAINED_KINDS
from peftcode.study.peft_options import OptionError, check_options
from peftcode.study.settings import MethodSettings

DEFAULT_SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A study configuration that cannot run; the message is one line naming the offending key."""


def _where(path) -> str:
    where = ""
    for part in path:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return where or "<top level>"


def validate_config(config: dict, schema: str | Path = DEFAULT_SCHEMA) -> dict:
    """Check ``config`` against the schema (filling defaults in place) and its names against each other."""
    check_schema(config, schema)
    check_models(config)
    check_methods(config)
    check_datasets(config)
    check_study(config)
    return config


def check_schema(config: dict, schema: str | Path) -> None:
    """The schema's check, which fills in its defaults; its error as one line naming the key."""
    try:
        validate(config, str(schema))
    except WorkflowError as error:
        # Snakemake raises its error while handling jsonschema's, whose path and message we report.
        cause = error.__context__
        if not isinstance(cause, jsonschema.ValidationError):
            raise
        cause = jsonschema.exceptions.best_match([cause, *cause.context]) or cause
        raise ConfigError(f"config error at {_where(cause.absolute_path)}: {cause.message}") from None


def check_models(config: dict) -> None:
    """A model's source and tokenizer go together."""
    for name, model in config["models"].items():
        if "build" in model["source"] and "tokenizer" not in model:
            raise ConfigError(f"config error at models.{name}: a built model needs a 'tokenizer' source")
        if "path" in model["source"] and "tokenizer" in model:
            raise ConfigError(
                f"config error at models.{name}.tokenizer: a local model directory is used as it is, with "
                "the tokenizer it holds"
            )
        if "revision" in model["source"] and "hub" not in model["source"]:
            raise ConfigError(f"config error at models.{name}.source: a revision pins a hub model only")


def check_methods(config: dict) -> None:
    """A dense retriever names its encoder; a method's PEFT options are its PEFT config class's."""
    for name, method in config["methods"].items():
        if method.get("retriever") == "dense" and not method.get("encoder"):
            raise ConfigError(f"config error at methods.{name}: the dense retriever needs an 'encoder'")
        try:
            check_options(name, MethodSettings.of(method, f"methods.{name}"))
        except OptionError as error:
            raise ConfigError(str(error)) from None


def check_datasets(config: dict) -> None:
    """A dataset's source, splits, sampling and primary metric go together; a union's members exist."""
    for name, dataset in config["datasets"].items():
        hub_only = sorted({"revision", "data_files"} & set(dataset.get("source", {})))
        if hub_only and "hub" not in dataset["source"]:
            raise ConfigError(f"config error at datasets.{name}.source: {hub_only[0]} is for a hub dataset")
        sampling = dataset.get("sampling", {})
        if sampling.get("temperature") == 0 and sampling["samples"] != 1:
            raise ConfigError(
                f"config error at datasets.{name}.sampling: greedy decoding (temperature 0) draws one sample"
            )
        if "package" in dataset.get("source", {}) and set(dataset["splits"]) != {"test"}:
            raise ConfigError(
                f"config error at datasets.{name}.splits: a package's data file is one split, test"
            )
        if "sampling" in dataset and "tests" not in dataset.get("fields", {}):
            raise ConfigError(f"config error at datasets.{name}.sampling: pass@k needs a 'tests' field")
        if "primary_metric" in dataset:
            metric, (kind, k) = dataset["primary_metric"], dataset["primary_metric"].split("@")
            computed = config["evaluation"]["pass_k" if kind == "pass" else "k"]
            if int(k) not in computed or (kind == "pass" and "sampling" not in dataset):
                raise ConfigError(
                    f"config error at datasets.{name}.primary_metric: {metric} is not computed for this "
                    f"dataset (pass@k needs tests and sampling; k must be one of {computed})"
                )
        for member in dataset.get("union", []):
            if "source" not in config["datasets"].get(member, {}):
                raise ConfigError(
                    f"config error at datasets.{name}.union: '{member}' is not a dataset with a source"
                )


def check_study(config: dict) -> None:
    """A block's names are the config's; what trains or shows examples has a training split."""
    for index, block in enumerate(config["study"]):
        for section, names in (
            *((s, block[s]) for s in ("models", "methods", "datasets")),
            ("datasets", block.get("test_on", [])),
        ):
            for name in names:
                if name not in config[section]:
                    known = ", ".join(sorted(config[section]))
                    raise ConfigError(
                        f"config error at study[{index}].{section}: unknown {section[:-1]} '{name}' "
                        f"(known: {known})"
                    )
        for dataset in block["datasets"]:
            if "train" in _splits(config, dataset):
                continue
            for method in block["methods"]:
                settings = config["methods"][method]
                if settings["kind"] in TRAINED_KINDS or max(settings.get("shots", [0])) > 0:
                    raise ConfigError(
                        f"config error at study[{index}]: dataset '{dataset}' has no training split, so "
                        f"method '{method}' cannot use it (evaluate it zero-shot, or with test_on)"
                    )


def _splits(config: dict, dataset: str) -> set[str]:
    settings = config["datasets"][dataset]
    if "union" in settings:
        return set.intersection(*(_splits(config, member) for member in settings["union"]))
    return set(settings["splits"])
