"""GPU claims between concurrent jobs, with processes that claim devices from a shared lock folder.

The devices are names in CUDA_VISIBLE_DEVICES: claiming only locks files and narrows that variable, so
it needs no GPU to test.
"""

import os
import select
import subprocess
import sys

import pytest

from peftcode.devices import claim_gpus

CLAIMANT = """
import sys
from peftcode.devices import claim_gpus
claimed = claim_gpus(int(sys.argv[1]), lock_dir=sys.argv[2], poll_s=0.1)
import os
print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
sys.stdin.read()  # holds its devices until the test closes stdin
"""


def start_claimant(count: int, lock_dir, visible="0,1", **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLAIMANT, str(count), str(lock_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": visible, **env},
    )


def finish(claimant: subprocess.Popen) -> None:
    claimant.stdin.close()
    claimant.wait(timeout=10)


def has_claimed(claimant: subprocess.Popen, within_s: float) -> bool:
    """Whether the claimant printed its devices (it prints nothing while it waits for them)."""
    readable, _, _ = select.select([claimant.stdout], [], [], within_s)
    return bool(readable)


def test_concurrent_jobs_get_distinct_gpus_and_a_third_waits_for_one(tmp_path):
    first, second = start_claimant(1, tmp_path), start_claimant(1, tmp_path)
    devices = {first.stdout.readline().strip(), second.stdout.readline().strip()}
    assert devices == {"0", "1"}
    third = start_claimant(1, tmp_path)
    assert not has_claimed(third, within_s=1.5), "a third job claimed a held GPU"
    finish(first)
    freed = third.stdout.readline().strip()
    assert freed in devices
    finish(second)
    finish(third)


def test_a_killed_job_frees_its_gpu(tmp_path):
    killed = start_claimant(1, tmp_path, visible="3")
    assert killed.stdout.readline().strip() == "3"
    killed.kill()
    killed.wait()
    successor = start_claimant(1, tmp_path, visible="3")
    assert successor.stdout.readline().strip() == "3"
    finish(successor)


def test_a_two_gpu_job_waits_without_holding_one_of_them(tmp_path):
    one = start_claimant(1, tmp_path)
    held = one.stdout.readline().strip()
    two = start_claimant(2, tmp_path)
    assert not has_claimed(two, within_s=1.0)
    # The free GPU is not held by the waiting two-GPU job, so a one-GPU job gets it at once.
    other = start_claimant(1, tmp_path)
    assert other.stdout.readline().strip() == ({"0", "1"} - {held}).pop()
    finish(one)
    finish(other)
    assert sorted(two.stdout.readline().strip().split(",")) == ["0", "1"]
    finish(two)


def test_zero_gpus_hides_every_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert claim_gpus(0, lock_dir=tmp_path) == []
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_under_slurm_the_allocation_stands(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    assert claim_gpus(1, lock_dir=tmp_path) == ["5"]
    assert not list(tmp_path.iterdir())


def test_asking_for_more_gpus_than_the_machine_has_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(RuntimeError, match=r"resources\.gpu"):
        claim_gpus(2, lock_dir=tmp_path)
