"""An inference's finished examples, kept as it goes so that a stopped job resumes with the rest.

The test set is generated a chunk of examples at a time, and each finished chunk is written to the job's
resume folder atomically (a whole file or none). A rerun of the same job (the same settings, model and test
set) reads the chunks there and generates only the others; each example's candidates do not depend on the
others in its batch (the beam search's by construction, the sampler's draws from seeds of their own, see
:mod:`peftcode.inference.sampling`), so the generations equal an uninterrupted run's. A job killed at any
point (SIGTERM at a time limit or preemption, then SIGKILL) loses at most the chunk it was in.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed
from pathlib import Path

from peftcode.jobs.cache import write_atomically
from peftcode.jobs.preemption import mark_finished, mark_started
from peftcode.jobs.versions import code_version

# The fewest examples a chunk: what a stopped job may lose, against a file more per chunk. A chunk is a
# whole number of the inference's batches, so that every batch is full.
CHUNK = 32
KEY_FILE = "key.json"


class ResumeStore:
    """The chunks an inference finished, under ``folder`` (None keeps nothing). ``key`` is all the job's
    generations depend on; chunks saved under another key are removed, not resumed."""

    def __init__(self, folder: str | Path | None, key: dict):
        self.folder = Path(folder) if folder else None
        # Examples read back from chunks, and the seconds every chunk took to generate (in this run or an
        # earlier one), by stage (the candidates, pass@k's samples).
        self.resumed: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        if self.folder is None:
            return
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        key_file = self.folder / KEY_FILE
        if self.folder.exists() and (not key_file.is_file() or json.loads(key_file.read_text()) != digest):
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        mark_started(self.folder)
        write_atomically(key_file, json.dumps(digest))

    def _chunk(self, stage: str, first: int) -> Path:
        return self.folder / f"{stage}-{first:07d}.json"

    def generated(
        self, stage: str, count: int, generate: Callable[[int, int], list[list[str]]], batch: int = 1
    ) -> list[list[str]]:
        """Each of ``count`` examples' candidates for ``stage``: the saved chunks', and the others from
        ``generate(first, last)`` (examples first to last - 1, batches of ``batch``), saved as each chunk
        finishes."""
        size = batch * math.ceil(CHUNK / batch)
        candidates: list[list[str]] = []
        for first in range(0, count, size):
            last = min(first + size, count)
            path = self._chunk(stage, first) if self.folder else None
            saved = json.loads(path.read_text()) if path is not None and path.is_file() else None
            if saved is not None and len(saved["candidates"]) == last - first:
                self.resumed[stage] += last - first
            else:
                started = time.perf_counter()
                saved = {"candidates": generate(first, last), "seconds": time.perf_counter() - started}
                if path is not None:
                    write_atomically(path, json.dumps(saved))
            self.seconds[stage] += saved["seconds"]
            candidates.extend(saved["candidates"])
        return candidates

    def finish(self) -> None:
        """The job's outputs are written: its chunks are kept, marked finished, until the study's run ends
        (:mod:`peftcode.jobs.preemption`), for a retry of a job SLURM marked TIMEOUT after it finished."""
        mark_finished(self.folder)


def generation_key(
    settings: dict, inputs: list[str | Path | None], precision: str, devices: list[str]
) -> dict:
    """All an inference's generations depend on: its settings, its input files as they are now
    (:func:`stamps`), the code and libraries it runs, the precision and devices it computes in; a rerun
    that differs in any starts over."""
    import torch

    return {
        "settings": settings,
        "inputs": stamps(inputs),
        "code": code_version("inference.infer"),
        "libraries": [
            version(name) for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes")
        ],
        "precision": precision,
        "devices": devices,
        "gpus": [torch.cuda.get_device_name(device) for device in range(torch.cuda.device_count())],
    }


def stamps(paths: list[str | Path | None]) -> list:
    """What identifies a job's input files as they are now: each file's (or folder's files') name, size
    and modification time, so that chunks generated from other inputs (a retrained adapter, a re-prepared
    test set) are not resumed."""
    found = []
    for path in (Path(p) for p in paths if p):
        files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path]
        found += [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return found


def version(package: str) -> str | None:
    try:
        return installed(package)
    except PackageNotFoundError:
        return None
