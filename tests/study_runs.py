"""Running the real Snakefile from tests: a study config written to a temporary folder, snakemake as a
subprocess in the repository root, and the per-rule job counts of its plans."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import REPO

# Test studies run side by side in the repository (one a test worker), each in a results folder of its
# own: without Snakemake's lock, whose files in .snakemake/locks one run lists and reads while another
# removes its own (a FileNotFoundError at the start of a run, seen in the suite).
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--nolock"]


def write_study(config: dict, folder: Path) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(
    configfile: Path, *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [*SNAKEMAKE, "--configfile", str(configfile), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def planned_jobs(
    configfile: Path, *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> dict[str, int]:
    """Jobs per rule that a dry run would execute (an empty dict when there is nothing to do)."""
    result = snakemake(configfile, "--dry-run", "--quiet", "rules", *args, env=env, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return job_counts(result)


def job_counts(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Jobs per rule in the "Job stats" table a (dry) run printed."""
    counts = {}
    text = result.stdout + result.stderr
    if "Job stats:" not in text:
        return counts
    table = text.split("Job stats:")[1]
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"\s*([\w-]+)\s+(\d+)\s*", line)
        if not match or match.group(1) == "total":
            break
        counts[match.group(1)] = int(match.group(2))
    return counts
