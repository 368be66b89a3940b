"""A job's log: everything the job writes (Python's logging and warnings, progress bars, a traceback that
ends it, and what libraries print from native code) goes to the one file that Snakemake names when the job
fails, on a cluster or among parallel local jobs alike."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def log_to(path: str | Path) -> None:
    """Send this process's standard output and error, at the file-descriptor level, to ``path``, and log
    INFO and above there with a time stamp."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "a", buffering=1)  # noqa: SIM115 (open for the rest of the job)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
        os.dup2(log.fileno(), stream.fileno())
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.captureWarnings(True)
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        logging.getLogger("peftcode").info("hub offline: this job reads the Hugging Face cache only")
