"""Pin a study to commits: every hub model, dataset, evaluated adapter and dense encoder of a study file
resolved to the commit its revision (or the default branch) names now, and written back into the file with
its comments and layout kept, so that a rerun reads exactly what this one did. It needs the hub; run it
once where the network is, then commit the file.

    python -m peftcode.study.pins studies/paper.yaml

A user unpins a source by deleting its ``revision`` (an encoder's ``@COMMIT``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from huggingface_hub import HfApi
from ruamel.yaml import YAML

COMMIT = re.compile(r"^[0-9a-f]{40}$")


def resolved(repo: str, revision: str | None, kind: str) -> str:
    """The commit that ``revision`` (None: the default branch) of a hub repository names now."""
    api = HfApi()
    info = api.dataset_info if kind == "dataset" else api.model_info
    return info(repo, revision=revision).sha


def pin_source(source: dict, kind: str) -> str | None:
    """Pin a hub ``source`` in place; the commit it was pinned at, or None where it was already."""
    if "hub" not in source or COMMIT.match(str(source.get("revision", ""))):
        return None
    source["revision"] = resolved(source["hub"], source.get("revision"), kind)
    return source["revision"]


def pin_encoder(method: dict) -> str | None:
    """Pin a dense retriever's encoder as ``ID@COMMIT``; the commit, or None where it was pinned already."""
    encoder = method.get("encoder")
    if not encoder or Path(encoder).is_dir():
        return None
    repo, _, revision = encoder.partition("@")
    if COMMIT.match(revision):
        return None
    method["encoder"] = f"{repo}@{resolved(repo, revision or None, 'model')}"
    return method["encoder"].partition("@")[2]


def pin_study(path: str | Path) -> list[str]:
    """Pin every hub source of the study file at ``path`` (rewritten in place); one line per pin made."""
    path = Path(path)
    yaml = YAML()  # round trip: comments, flow style and key order are kept
    yaml.width = 4096
    config = yaml.load(path.read_text())
    pinned = []
    for section, kind in (("models", "model"), ("datasets", "dataset"), ("methods", "model")):
        for name, entry in config.get(section, {}).items():
            if "source" in entry:
                commit = pin_source(entry["source"], kind)
                if commit:
                    pinned.append(f"{section}.{name}: {entry['source']['hub']} at {commit}")
            if section == "methods" and pin_encoder(entry):
                pinned.append(f"methods.{name}.encoder: {entry['encoder']}")
    with path.open("w") as handle:
        yaml.dump(config, handle)
    return pinned


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="a study file, e.g. studies/paper.yaml")
    for line in pin_study(parser.parse_args(argv).study):
        print(line)


if __name__ == "__main__":
    main()
