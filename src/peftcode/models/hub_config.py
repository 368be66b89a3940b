"""A hub model's config.json, read without its weights: from the Hugging Face cache, else from the configs
this package ships for the studies in ``studies/`` (``model_configs/``, so that their dry runs plan with
no network), else from the hub; a model whose config cannot be had stops with one line naming it and the
command that fetches it. Its own module, so that the model jobs that read a config do not run, and are not
versioned by, the planner's code."""

from __future__ import annotations

import json
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent / "model_configs"


class ModelConfigError(ValueError):
    """A hub model whose config.json cannot be had; the message is one line naming it and how to fetch it."""


def shipped_fields(repo: str) -> dict | None:
    """The config.json this package ships for a hub model (see ``model_configs/README.md``), if any."""
    path = SHIPPED / f"{repo.replace('/', '--')}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def hub_config(repo: str, revision: str | None = None, local_only: bool = False) -> dict:
    """A hub model's config.json: from the Hugging Face cache, else the package's, else (unless
    ``local_only``) the hub."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    where = {"repo_id": repo, "filename": "config.json", "revision": revision}
    try:
        return json.loads(Path(hf_hub_download(**where, local_files_only=True)).read_text())
    except LocalEntryNotFoundError:
        shipped = shipped_fields(repo)
        if shipped is not None or local_only:
            return shipped
    try:
        return json.loads(Path(hf_hub_download(**where)).read_text())
    except (LocalEntryNotFoundError, OSError):
        raise ModelConfigError(
            f"model {repo}: its config.json is in neither the Hugging Face cache nor this package, and the "
            f"hub cannot be reached; fetch it where the network is: hf download {repo} config.json"
            + (f" --revision {revision}" if revision else "")
        ) from None
