"""Preemption as clusters do it: SLURM's time limit and preemption send SIGTERM, then SIGKILL some seconds
later. A fine-tune that receives SIGTERM finishes the step it is in, saves its whole state at that step (not
at the last validation), and exits non-zero, so that Snakemake's retry resumes from that step."""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path

# In a resume folder, the mark of a job that finished. The folder stays until the study's run has succeeded
# (the Snakefile's ``onsuccess``): SLURM marks a job that ends past its time limit TIMEOUT even though it
# finished, Snakemake then deletes its outputs and retries it, and the retry resumes from what is kept here
# instead of starting again.
FINISHED = "finished"


class Preempted(RuntimeError):
    """The job was asked to stop (SIGTERM) and saved its state; a rerun resumes from it."""


class PreemptionWatch:
    """``with PreemptionWatch() as watch:`` notes a SIGTERM in ``watch.requested`` instead of dying of it (in
    the main thread, where Python delivers signals; elsewhere it watches nothing)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _request(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._request)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def mark_finished(resume_dir: str | Path | None) -> None:
    """The job whose resume folder this is wrote its outputs."""
    if resume_dir is not None and Path(resume_dir).is_dir():
        (Path(resume_dir) / FINISHED).touch()


def mark_started(resume_dir: str | Path | None) -> None:
    """A run of the job started again: what its folder holds may be needed until it finishes."""
    if resume_dir is not None:
        (Path(resume_dir) / FINISHED).unlink(missing_ok=True)


def remove_finished(resume_root: str | Path) -> list[Path]:
    """Every finished job's resume folder under ``resume_root`` removed (at the end of a study's run that
    succeeded, when no retry can need it); returns them."""
    finished = sorted(mark.parent for mark in Path(resume_root).rglob(FINISHED))
    for folder in finished:
        shutil.rmtree(folder, ignore_errors=True)
    return finished
