"""Preemption as clusters do it: SLURM's time limit and preemption send SIGTERM, then SIGKILL some seconds
later. A fine-tune that receives SIGTERM finishes the step it is in, saves its whole state at that step (not
at the last validation), and exits non-zero, so that Snakemake's retry resumes from that step."""

from __future__ import annotations

import signal
import threading


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
