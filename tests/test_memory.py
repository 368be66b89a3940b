"""The per-job memory record."""

import subprocess
import sys

from peftcode.memory import peak_rss_mb

MIB = 2**20


def test_peak_resident_memory_sees_an_allocation():
    before = peak_rss_mb()
    ballast = bytearray(200 * MIB)
    ballast[::4096] = b"\x01" * len(range(0, len(ballast), 4096))  # touch every page
    assert peak_rss_mb() >= before + 190


def test_a_job_started_by_a_large_process_reports_its_own_peak():
    """Snakemake starts each job from its own process: the job's peak must not include its parent's."""
    ballast = bytearray(800 * MIB)
    ballast[::4096] = b"\x01" * len(range(0, len(ballast), 4096))
    child = subprocess.run(
        [sys.executable, "-c", "from peftcode.memory import peak_rss_mb; print(peak_rss_mb())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert peak_rss_mb() > 800
    assert float(child.stdout) < 600, "the child reports its parent's memory"
