"""What a model job does before it imports its module: keep out the libraries it will not use.

PEFT imports bitsandbytes wherever it is installed, and bitsandbytes imports torch's compiler with it: about
1.3 s of every model job's start (see benchmarks/bench_startup.py), for the QLoRA jobs alone to use. A job
that quantizes nothing marks it absent (``sys.modules[name] = None``, Python's way to block an import), so
that PEFT and transformers see it as not installed.
"""

from __future__ import annotations

import sys


def import_only_what_is_used(settings) -> None:
    """Before importing peftcode.training.finetune or peftcode.inference.infer: a job whose ``settings`` (a
    ``TrainSettings`` or ``InferSettings``) quantize nothing does without bitsandbytes."""
    if not settings.quantization and "bitsandbytes" not in sys.modules:
        sys.modules["bitsandbytes"] = None
