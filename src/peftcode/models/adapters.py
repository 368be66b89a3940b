"""Adapters someone else trained (or this study did, in another run, and published): a method of kind
``adapter`` names one by hub id and revision or by local folder, and its cells are evaluated like the
study's own fine-tunes (same prompts, decoding, metrics, sandbox and reports) over the cell's model, which
must be the adapter's base. Nothing is trained.

:mod:`peftcode.models.fetch_adapter` runs where the network is and writes the manifest that the inference
jobs read here, offline.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from peftcode.study.families import FAMILIES
from peftcode.study.kinds import ADAPTER_KIND
from peftcode.study.settings import ModelSettings

MANIFEST = "peftcode_adapter.json"
ADAPTER_CONFIG = "adapter_config.json"


class AdapterError(ValueError):
    """An adapter that cannot serve a cell; the message is one line naming the method."""


def read_adapter_config(source: dict, local_only: bool = False) -> dict | None:
    """An adapter's ``adapter_config.json``; None where it is on the hub and cannot be had (offline, say)."""
    if "path" in source:
        path = Path(source["path"]) / ADAPTER_CONFIG
        if not path.is_file():
            raise AdapterError(f"{source['path']} holds no {ADAPTER_CONFIG}: not a PEFT adapter folder")
        return json.loads(path.read_text())
    try:
        path = hf_hub_download(
            source["hub"], ADAPTER_CONFIG, revision=source.get("revision"), local_files_only=local_only
        )
    except LocalEntryNotFoundError:  # offline, or the hub out of reach, and not cached
        return None
    return json.loads(Path(path).read_text())


def base_mismatch(adapter_config: dict, model: ModelSettings) -> str | None:
    """Why ``model`` is not the adapter's base, or None where it may be.

    A base named by hub id must be the model's hub id (and its commit, where both pin one); a base named by
    an absolute path (an adapter of a local, packaged or built model, see :mod:`peftcode.models.export`) is
    checked by its weights' checksum once the model is prepared (:func:`check_base_weights`)."""
    task = adapter_config.get("task_type")
    if task and task != FAMILIES[model.family].peft_task_type:
        return f"its task type is {task}, and the model's family is {model.family}"
    base = adapter_config.get("base_model_name_or_path")
    if not base or Path(base).is_absolute():
        return None
    source = model.source
    if base.lower() != str(source.get("hub", "")).lower():
        kind, named = next(iter(source.items()))
        described = named if kind in ("hub", "path") else f"a {kind} model"
        return f"its base is {base}, and the model is {described}"
    pinned, ours = adapter_config.get("revision"), source.get("revision")
    if pinned and ours and len(pinned) == len(ours) == 40 and pinned != ours:
        return f"its base is {base} at {pinned}, and the model is pinned at {ours}"
    return None


def check_bases(study, local_only: bool = False) -> None:
    """Stop before any job where a cell's adapter was not trained on the cell's model (one line naming the
    method and the model). An adapter the hub cannot give now (offline, not cached) is not checked here;
    one whose base records its weights' checksum is checked again when it is loaded."""
    configs: dict[str, dict | None] = {}
    for cell in study.cells:
        if study.kind(cell.variant) != ADAPTER_KIND:
            continue
        if cell.variant not in configs:
            configs[cell.variant] = read_adapter_config(study.adapter_source(cell.variant), local_only)
        adapter_config = configs[cell.variant]
        if adapter_config is None:
            continue
        why = base_mismatch(adapter_config, study.model_settings(cell.model))
        if why:
            raise AdapterError(
                f"config error at methods.{study.method_of(cell.variant)}: the adapter does not fit model "
                f"'{cell.model}': {why}"
            )


def adapter_location(adapter_dir: str | Path) -> Path:
    """The folder an adapter loads from: a fine-tune's checkpoint itself, or where a fetched adapter lies
    (the hub cache's commit, read without the network)."""
    manifest_path = Path(adapter_dir) / MANIFEST
    if not manifest_path.is_file():
        return Path(adapter_dir)
    manifest = json.loads(manifest_path.read_text())
    if manifest["hub"]:
        hub = manifest["hub"]
        return Path(snapshot_download(hub["repo"], revision=hub["commit"], local_files_only=True))
    return Path(manifest["path"])


def check_base_weights(adapter_dir: str | Path, model_dir: str | Path) -> None:
    """Stop where a fetched adapter that records its base's weights by checksum (one a study exported) is
    loaded over other weights. A fine-tune's own checkpoint is not checked: the DAG gives it its base."""
    if not (Path(adapter_dir) / MANIFEST).is_file():
        return
    # Here, not at the top: these load torch's model stack, which the Snakefile's parse never needs.
    from peftcode.models.export import PROMPT_FILE, base_reference

    record = adapter_location(adapter_dir) / PROMPT_FILE
    recorded = json.loads(record.read_text()).get("base", {}).get("sha256") if record.is_file() else None
    if not recorded:
        return
    found = base_reference(model_dir)["sha256"]
    if recorded != found:
        held = f"others ({found[:12]}...)" if found else "a hub model's, which carry no such checksum"
        raise AdapterError(
            f"{adapter_dir}: the adapter was trained on base weights of sha256 {recorded[:12]}..., and "
            f"{model_dir} holds {held}"
        )
