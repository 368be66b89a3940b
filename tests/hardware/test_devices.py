"""GPU claims between concurrent jobs, with processes that claim devices from a shared lock folder.

The devices are names in CUDA_VISIBLE_DEVICES: claiming only locks files and narrows that variable, so
it needs no GPU to test.
"""

import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from peftcode.hardware.devices import claim_gpus
from tests.helpers import REPO

CLAIMANT = """
import sys
from peftcode.hardware.devices import claim_gpus
from tests.helpers import REPO
claimed = claim_gpus(int(sys.argv[1]), lock_dir=sys.argv[2], poll_s=0.1)
import os
print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
sys.stdin.read()  # holds its devices until the test closes stdin
"""


def start_claimant(count: int, lock_dir, visible="0,1", user: int | None = None, **env) -> subprocess.Popen:
    # Another user runs the system's Python (ours may sit in a home folder closed to others): claiming
    # needs only the standard library and peftcode.hardware.devices.
    python = sys.executable if user is None else "/usr/bin/python3"
    if user is not None:
        env["PYTHONPATH"] = str(REPO / "src")
    return subprocess.Popen(
        [python, "-c", CLAIMANT, str(count), str(lock_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": visible, **env},
        user=user,
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


NOBODY = 65534


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/bin/python3").exists(), reason="a second user's job needs root"
)
def test_two_users_claim_gpus_on_one_machine_and_a_folder_nobody_else_can_write_is_one_line():
    # A folder the second user reaches (pytest's own are closed to others).
    folder = Path(tempfile.mkdtemp(prefix="peftcode-claims-"))
    folder.chmod(0o755)
    shared = folder / "locks"
    ours = start_claimant(1, shared)
    assert ours.stdout.readline().strip() == "0"
    # Another user's job, in the folder and beside the lock file the first user's job made.
    theirs = start_claimant(1, shared, user=NOBODY)
    assert theirs.stdout.readline().strip() == "1", theirs.stderr.read()[-2000:]
    third = start_claimant(1, shared, user=NOBODY)
    assert not has_claimed(third, within_s=1.0), "a second user's job claimed a held GPU"
    finish(ours)
    assert third.stdout.readline().strip() == "0"
    finish(theirs)
    finish(third)
    # A folder one user made for itself alone: the other's claim says what to set, in one line.
    private = folder / "private"
    private.mkdir(mode=0o755)
    refused = start_claimant(1, private, user=NOBODY)
    refused.stdin.close()
    assert refused.wait(timeout=30) != 0
    last = refused.stderr.read().strip().splitlines()[-1]
    assert (
        last.startswith("peftcode.hardware.devices.ClaimError: cannot claim GPU 0: ")
        and "PEFTCODE_GPU_LOCKS" in last
    )
