"""The per-job cost record: peak memory, time and what sized the job."""

import subprocess
import sys

from peftcode.hardware.memory import peak_rss_mb

MIB = 2**20
ALLOCATE_200_MIB = """
from peftcode.hardware.memory import peak_rss_mb
before = peak_rss_mb()
ballast = bytearray(200 * 2**20)
ballast[::4096] = b"\\x01" * len(range(0, len(ballast), 4096))
print(before, peak_rss_mb())
"""


def test_peak_resident_memory_sees_an_allocation():
    child = subprocess.run(
        [sys.executable, "-c", ALLOCATE_200_MIB],
        capture_output=True,
        text=True,
        check=True,
    )
    before, after = map(float, child.stdout.split())
    assert after >= before + 190


def test_a_job_started_by_a_large_process_reports_its_own_peak():
    """Snakemake starts each job from its own process: the job's peak must not include its parent's."""
    ballast = bytearray(800 * MIB)
    ballast[::4096] = b"\x01" * len(range(0, len(ballast), 4096))
    child = subprocess.run(
        [sys.executable, "-c", "from peftcode.hardware.memory import peak_rss_mb; print(peak_rss_mb())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert peak_rss_mb() > 800
    assert float(child.stdout) < 600, "the child reports its parent's memory"
