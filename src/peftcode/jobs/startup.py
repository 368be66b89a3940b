"""What a model job does before it imports its module: keep out the libraries it will not use, and spare the
garbage collector the ones it will.

PEFT imports bitsandbytes wherever it is installed, and bitsandbytes imports torch's compiler with it: about
1.3 s of every model job's start (see benchmarks/bench_startup.py), for the QLoRA jobs alone to use. A job
that quantizes nothing marks it absent (``sys.modules[name] = None``, Python's way to block an import), so
that PEFT and transformers see it as not installed.

Importing torch, transformers and PEFT creates some 400,000 objects that live as long as the job (modules,
classes, functions), and Python's cyclic garbage collector walks over all of them each time it runs a full
collection as they pile up: about a fifth of a model job's start. The collector is paused while the job
imports; once its imports are done (:func:`imports_done`, when its work begins), one collection frees what
the imports left, the survivors are frozen out of later collections (``gc.freeze``), and the collector
resumes for the job's work.
"""

from __future__ import annotations

import gc
import sys

_paused = False


def import_only_what_is_used(settings) -> None:
    """Before importing peftcode.training.finetune or peftcode.inference.infer: a job whose ``settings`` (a
    ``TrainSettings`` or ``InferSettings``) quantize nothing does without bitsandbytes; and the collector
    pauses until :func:`imports_done`."""
    if not settings.quantization and "bitsandbytes" not in sys.modules:
        sys.modules["bitsandbytes"] = None
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def imports_done() -> None:
    """The job's imports are done: collect once, freeze what is left, and resume the collector (if it was
    paused above)."""
    global _paused
    if _paused:
        gc.collect()
        gc.freeze()
        gc.enable()
        _paused = False
