"""peftcode's own cache on disk (model shapes, what PEFT builds, PEFT's config fields): derived data that
parsing the Snakefile reads instead of importing torch and PEFT."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "peftcode" / "derived"


def write_atomically(path: Path, text: str) -> None:
    """Written whole or not at all: parses running side by side (test workers, cluster jobs) may read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(partial, path)
