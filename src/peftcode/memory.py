"""Peak memory and cost of one job, measured in the job's own process."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch


class JobMeter:
    """Measures a job from construction to :meth:`write`: wall time, peak memory, device.

    On CUDA it reads the allocator's peaks (reset at the start); on the CPU it reads the process's peak
    resident set size from the kernel's accounting, which covers every allocation the job made.
    """

    def __init__(self):
        self.started = time.perf_counter()
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def snapshot(self) -> dict:
        record = {
            "device": torch.cuda.get_device_name() if self.cuda else "cpu",
            "wall_time_s": round(time.perf_counter() - self.started, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        if self.cuda:
            record["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            record["cuda_max_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
        return record

    def write(self, path: str | Path, **extra) -> dict:
        record = {**self.snapshot(), **extra}
        Path(path).write_text(json.dumps(record, indent=2))
        return record


def weight_footprint_mb(model) -> float:
    """Bytes held by the model's parameters and buffers, in MiB."""
    tensors = [*model.parameters(), *model.buffers()]
    return round(sum(t.numel() * t.element_size() for t in tensors) / 2**20, 1)
