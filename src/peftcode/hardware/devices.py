"""Which GPUs a job computes on.

Snakemake's ``--resources gpu=N`` caps how many GPU jobs run at once, but does not say which device each
one gets: without more, every job would compute on the first GPU. A local job therefore claims devices of
its own with an exclusive lock file per device, held until the process ends (the kernel drops the lock
even when the job is killed), and shows CUDA only those. Under SLURM the allocation already did this.

Call :func:`claim_gpus` before anything initializes CUDA: CUDA reads CUDA_VISIBLE_DEVICES once.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# One folder for every user of a machine (several users may share a GPU box), writable by all like the
# system's temp folder; PEFTCODE_GPU_LOCKS names another.
DEFAULT_LOCK_DIR = Path(
    os.environ.get("PEFTCODE_GPU_LOCKS", Path(tempfile.gettempdir()) / "peftcode-gpu-locks")
)


class ClaimError(RuntimeError):
    """GPUs that cannot be claimed; the message is one line saying what to set."""


# Open lock files of the devices this process holds; closing one would release its device.
_held: list = []


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES where set, else every GPU nvidia-smi lists."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [device.strip() for device in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if device.strip()]
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return listing.split()


def _lock_dir(lock_dir: Path) -> Path:
    """The lock folder, made writable by every user (and sticky, so that none removes another's files)."""
    try:
        lock_dir.mkdir(parents=True)
        os.chmod(lock_dir, 0o1777)
    except FileExistsError:
        pass
    return lock_dir


def _open_lock_file(path: Path) -> int:
    """A descriptor of a device's lock file, read-only (which ``flock`` needs): opened as it is where
    another user made it (the kernel's protected_regular refuses creating over another's file in a sticky
    folder), else made by this process, readable by every user whatever the umask."""
    while True:
        try:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            pass
        try:
            handle = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue  # another job made it first
        os.fchmod(handle, 0o644)
        return handle


def _try_lock(device: str, lock_dir: Path) -> int | None:
    """A descriptor holding ``device``'s lock, or None while another job (of any user) holds it."""
    path = lock_dir / f"gpu-{device}.lock"
    try:
        handle = _open_lock_file(path)
    except PermissionError:
        problem = "is not readable" if path.exists() else "cannot be created"
        raise ClaimError(
            f"cannot claim GPU {device}: its lock file {path} {problem} by this user; set PEFTCODE_GPU_LOCKS "
            "to a folder that every user of this machine can write"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        return None
    return handle


def claim_gpus(count: int, lock_dir: str | Path = DEFAULT_LOCK_DIR, poll_s: float = 1.0) -> list[str]:
    """Give this process ``count`` GPUs that no other job on the machine holds, and hide the rest.

    ``count`` 0 hides every GPU, so the job computes on the CPU. Waits while all devices are held (more
    GPU jobs than GPUs), and never holds some devices while it waits for the others.
    """
    if count == 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return []
    if "SLURM_JOB_ID" in os.environ:
        return visible_gpus()
    devices = visible_gpus()
    if len(devices) < count:
        raise ClaimError(
            f"the job asks for {count} GPU(s) (config key resources.gpu) but this machine shows "
            f"{len(devices)}: set resources.gpu to 0 to compute on the CPU"
        )
    lock_dir = _lock_dir(Path(lock_dir))
    announced = False
    while True:
        handles = {}
        for device in devices:
            handle = _try_lock(device, lock_dir)
            if handle is not None:
                handles[device] = handle
                if len(handles) == count:
                    _held.extend(handles.values())
                    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(handles)
                    return list(handles)
        for handle in handles.values():
            os.close(handle)
        if not announced:
            announced = True
            print(f"all of GPUs {','.join(devices)} are held by other jobs; waiting", file=sys.stderr)
        time.sleep(poll_s)


def job_compute(job) -> dict:
    """What a model job computes with, from Snakemake's job object: its threads, its GPUs and each GPU's
    memory (the arguments :func:`peftcode.training.finetune.finetune` and
    :func:`peftcode.inference.infer.infer` take)."""
    return {
        "threads": job.threads,
        "gpus": job.resources.gpu,
        "gpu_memory_gb": job.config["resources"].get("gpu_memory_gb"),
    }
