"""A method's PEFT type and the options its PEFT config class receives, and their check against the class's
own fields, before any job runs.

The options are the study's own settings mapped onto the class (LoRA's ``r``, ``alpha`` and ``dropout``,
the model's target modules, prompt tuning's virtual tokens), under the method's ``peft`` options, which go
to the class as they are (``use_dora``, ``use_rslora``, ``init_lora_weights: pissa``, ``rank_pattern``...).
An option the class does not have, or of another type than its field's, stops the dry run with one line
naming the method, the option and the class's nearest field. The classes' fields are read from PEFT once
per PEFT version and cached, so that a parse of the Snakefile does not import PEFT.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from functools import cache
from importlib.metadata import version
from types import MappingProxyType

from peftcode.jobs.cache import CACHE, write_atomically
from peftcode.jobs.versions import code_version
from peftcode.study.kinds import KINDS, UNSUPPORTED_LORA_INITS, UNSUPPORTED_PEFT_TYPES
from peftcode.study.settings import MethodSettings

# Set by the study for every method, whatever a method's ``peft`` options say.
MANAGED = ("task_type", "peft_type", "base_model_name_or_path", "revision", "inference_mode")


class OptionError(ValueError):
    """A method's PEFT option that its config class would refuse; one line naming the method."""


def peft_type(method: MethodSettings) -> str | None:
    """The PEFT type of a method; None for full fine-tuning and the untrained kinds."""
    return KINDS[method.kind].peft_type or method.peft_type


def config_options(method: MethodSettings, targets: Mapping = MappingProxyType({})) -> dict:
    """The options a method's PEFT config class receives on a model whose ``target_modules`` are
    ``targets`` (its task type and, for prompt tuning from text, the tokenizer are the fine-tune's to add)."""
    kind = KINDS[method.kind]
    options: dict = {}
    if kind.lora_like:
        options = {"r": method.r, "lora_alpha": method.alpha, "lora_dropout": method.dropout}
        if targets.get("attention"):
            options["target_modules"] = targets["attention"]
    elif peft_type(method) == "IA3" and (targets.get("attention") or targets.get("feedforward")):
        feedforward = targets.get("feedforward") or []
        options = {
            "target_modules": (targets.get("attention") or []) + feedforward,
            "feedforward_modules": feedforward or None,
        }
    elif kind.soft_prompt:
        options = {"num_virtual_tokens": method.num_virtual_tokens}
    elif targets.get("attention") and "target_modules" in (config_fields(peft_type(method)) or {}).get(
        "fields", {}
    ):
        options = {"target_modules": targets["attention"]}  # a PEFT type by name adapts the model's targets
    return {**options, **method.peft}


def _describe(hint) -> object:
    """A JSON description of a field's type hint, for :func:`_fits`."""
    import enum
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "none"
    if hint in (bool, int, float, str, dict):
        return hint.__name__
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"literal": [member.value for member in hint]}
    if origin is typing.Literal:
        return {"literal": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"union": [_describe(arg) for arg in args]}
    if origin in (list, tuple, set):
        return {"list": _describe(args[0]) if args else "any"}
    if origin is dict:
        return "dict"
    return "any"  # a config object of its own (LoftQConfig...): PEFT checks it


def _fits(value, described) -> bool:
    if described == "any":
        return True
    if described == "none":
        return value is None
    if described == "bool":
        return isinstance(value, bool)
    if described == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if described == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if described in ("str", "dict"):
        return isinstance(value, str if described == "str" else dict)
    if "literal" in described:
        # A literal such as "pissa_niter_[number of iters]" stands for a family of values.
        return any(
            value == option
            or (
                isinstance(option, str)
                and "[" in option
                and str(value).startswith(option[: option.index("[")])
            )
            for option in described["literal"]
        )
    if "union" in described:
        return any(_fits(value, option) for option in described["union"])
    return isinstance(value, list | tuple) and all(_fits(item, described["list"]) for item in value)


def config_fields(peft_type_name: str) -> dict | None:
    """The fields of PEFT's config class for a PEFT type, described; None where PEFT has no such type."""
    return _described_classes().get(peft_type_name)


@cache
def _described_classes() -> dict:
    """Every PEFT config class's fields, described: read once a process from the cache on disk, which is
    written once per PEFT version and version of this code."""
    cached = CACHE / f"peft-fields-{version('peft')}-{code_version('study.peft_options')}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    import dataclasses
    import typing

    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    described = {}
    for peft_type_key, config_class in PEFT_TYPE_TO_CONFIG_MAPPING.items():
        try:
            hints = typing.get_type_hints(config_class)
        except Exception:  # a class whose hints do not resolve: its options are PEFT's to check
            hints = {}
        described[str(peft_type_key.value)] = {
            "class": config_class.__name__,
            "fields": {f.name: _describe(hints.get(f.name)) for f in dataclasses.fields(config_class)},
        }
    write_atomically(cached, json.dumps(described))
    return described


def check_options(entry: str, method: MethodSettings) -> None:
    """Stop where the PEFT type or options of the method named ``entry`` would be refused (see the
    module)."""
    name = peft_type(method)
    if name is None:
        if method.peft:
            raise OptionError(
                f"config error at methods.{entry}.peft: kind '{method.kind}' is not a PEFT method"
            )
        return
    if name in UNSUPPORTED_PEFT_TYPES:
        raise OptionError(
            f"config error at methods.{entry}.peft_type: {name} is not supported: "
            + UNSUPPORTED_PEFT_TYPES[name]
        )
    described = config_fields(name)
    if described is None:
        raise OptionError(
            f"config error at methods.{entry}.peft_type: PEFT {version('peft')} has no type {name}"
        )
    fields, cls = described["fields"], described["class"]
    init = method.peft.get("init_lora_weights")
    if isinstance(init, str) and init in UNSUPPORTED_LORA_INITS:
        raise OptionError(
            f"config error at methods.{entry}.peft.init_lora_weights: {init} is not supported: "
            + UNSUPPORTED_LORA_INITS[init]
        )
    for option, value in method.peft.items():
        if option in MANAGED:
            raise OptionError(
                f"config error at methods.{entry}.peft.{option}: the study sets {option} itself"
            )
        if option not in fields:
            near = difflib.get_close_matches(option, list(fields), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise OptionError(
                f"config error at methods.{entry}.peft.{option}: {cls} has no option '{option}'{hint}"
            )
        if not _fits(value, fields[option]):
            raise OptionError(
                f"config error at methods.{entry}.peft.{option}: {value!r} is not a valid {cls}.{option} "
                f"(expected {json.dumps(fields[option])})"
            )
