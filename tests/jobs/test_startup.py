"""A model job's start: the libraries it will not use kept out, and the garbage collector paused while it
imports the ones it will, then resumed, with the imports' objects frozen out of its collections, when its
work begins. Each case in a fresh interpreter, as a job script runs."""

import json
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

# A job script's start, as workflow/scripts/infer.py has it, up to its work (job_run); ``{pause}`` is the
# model job's call, left out for a job that imports no model (evaluate).
JOB = """
import gc, json, sys
from types import SimpleNamespace
from peftcode.jobs.startup import import_only_what_is_used
{pause}
paused = not gc.isenabled()
import torch
from transformers import LlamaForCausalLM
from peftcode.jobs.tracking import job_run
job = SimpleNamespace(config={{"results": sys.argv[1]}}, wildcards=None,
                      params=SimpleNamespace(settings={{}}, code="code"))
with job_run(job, "infer"):
    blocked = "bitsandbytes" in sys.modules and sys.modules["bitsandbytes"] is None
    print(json.dumps({{"paused": paused, "collecting": gc.isenabled(), "frozen": gc.get_freeze_count(),
                      "bitsandbytes": blocked}}))
"""


def started(tmp_path, pause: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", JOB.format(pause=pause), str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("quantization", [None, {"bits": 4}])
def test_a_model_job_imports_with_the_collector_paused_and_works_with_it_on(tmp_path, quantization):
    settings = f"SimpleNamespace(quantization={quantization!r})"
    state = started(tmp_path, f"import_only_what_is_used({settings})")
    assert state["paused"] and state["collecting"]
    assert state["frozen"] > 100_000  # torch's and transformers' modules, classes and functions
    assert state["bitsandbytes"] == (quantization is None)


def test_a_job_that_imports_no_model_keeps_the_collector_as_it_was(tmp_path):
    state = started(tmp_path, "")
    assert state == {"paused": False, "collecting": True, "frozen": 0, "bitsandbytes": False}


def test_every_script_that_pauses_the_collector_resumes_it_before_its_work():
    for script in sorted((REPO / "workflow" / "scripts").glob("*.py")):
        source = script.read_text()
        if "import_only_what_is_used(" in source:
            pause = source.index("import_only_what_is_used(settings)")
            first_model_import = re.search(r"^from peftcode\.(training|inference)\.\w+ import", source, re.M)
            assert pause < first_model_import.start() < source.index("with job_run("), script.name
