"""An evaluated adapter made ready for offline jobs (the ``fetch_adapter`` rule, run where the network is):
a hub adapter downloaded into the Hugging Face cache (no copy), or a local folder checked in place, and a
manifest naming where it lies (see :mod:`peftcode.models.adapters`)."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import snapshot_download

from peftcode.models.adapters import ADAPTER_CONFIG, MANIFEST


def fetch_adapter(source: dict, out_dir: str | Path) -> dict:
    """Make ``out_dir`` the adapter's folder for later jobs: a manifest naming where it lies (the hub cache's
    resolved commit, or the local folder), its base and its PEFT type. Returns the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if "hub" in source:
        folder = Path(snapshot_download(source["hub"], revision=source.get("revision")))
        where = {"hub": {"repo": source["hub"], "commit": folder.name}, "path": None}
    else:
        folder = Path(source["path"]).resolve()
        where = {"hub": None, "path": str(folder)}
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    manifest = {
        "source": source,
        **where,
        "peft_type": config.get("peft_type"),
        "base": config.get("base_model_name_or_path"),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest
