"""Peak memory and cost of one job, measured in the job's own process."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import torch


def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB; None where there is no /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident set size, from the kernel's accounting.

    On Linux it is /proc's VmHWM, the high-water mark of the process's own memory since it started its
    program. getrusage's ru_maxrss would not do: Linux carries into it the parent's resident set at the
    fork, so a job started by a large process (Snakemake, a benchmark holding a model) would report at least
    its parent's size.
    """
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


class JobMeter:
    """Measures a job from construction to :meth:`write`: wall time, peak memory, device.

    On CUDA it reads the allocator's peaks of each of the job's GPUs (reset at the start) and their sum; on
    the CPU it reads the process's peak resident set size from the kernel's accounting, which covers every
    allocation the job made.
    """

    def __init__(self):
        self.started = time.perf_counter()
        self.started_at = time.time()
        # What the process held before the job loaded anything (its libraries): the CPU peak less this is
        # the job's own, which the memory plan estimates.
        self.baseline_rss_mb = _status_mb("VmRSS")
        self.gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        for device in range(self.gpus):
            torch.cuda.reset_peak_memory_stats(device)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def snapshot(self) -> dict:
        record = {
            "device": torch.cuda.get_device_name(0) if self.gpus else "cpu",
            # The devices the job was given (see peftcode.hardware.devices); None where nothing restricted
            # them.
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "started_at": round(self.started_at, 3),
            "finished_at": round(time.time(), 3),
            "wall_time_s": round(self.elapsed(), 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "baseline_rss_mb": None if self.baseline_rss_mb is None else round(self.baseline_rss_mb, 1),
        }
        if self.gpus:
            record.update(gpu_peaks(self.gpus))
        return record

    def write(self, path: str | Path, **extra) -> dict:
        record = {**self.snapshot(), **extra}
        Path(path).write_text(json.dumps(record, indent=2))
        return record


def gpu_peaks(gpus: int) -> dict:
    """The allocator's peaks on each of a job's ``gpus`` (a model spread over them holds a part on each,
    which the memory plan checks against one GPU's memory) and their sum, the job's own."""
    allocated = [round(torch.cuda.max_memory_allocated(device) / 2**20, 1) for device in range(gpus)]
    reserved = [round(torch.cuda.max_memory_reserved(device) / 2**20, 1) for device in range(gpus)]
    return {
        "gpu_names": [torch.cuda.get_device_name(device) for device in range(gpus)],
        "cuda_max_allocated_mb_per_gpu": allocated,
        "cuda_max_reserved_mb_per_gpu": reserved,
        "cuda_max_allocated_mb": round(sum(allocated), 1),
        "cuda_max_reserved_mb": round(sum(reserved), 1),
    }


def weight_footprint_mb(model) -> float:
    """Bytes held by the model's parameters and buffers, in MiB."""
    tensors = [*model.parameters(), *model.buffers()]
    return round(sum(t.numel() * t.element_size() for t in tensors) / 2**20, 1)


def parameter_counts(model) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total}
