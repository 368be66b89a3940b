"""Numeric precision of a job: the dtype frozen weights are loaded in, the autocast its forward runs under,
and the gradient scaler fp16 needs.

``auto`` resolves on the job's own device: bf16 on a GPU that supports it, fp16 on one that does not, fp32
on the CPU (so a study's params do not depend on where it runs). Trainable weights (adapters, prompt
encoders, a full fine-tune's master weights) stay in float32 whatever the precision: it sets the frozen
weights and the compute.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str  # fp32, bf16 or fp16, resolved
    device: torch.device

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    def autocast(self):
        """The context a forward runs in: autocast to the precision's dtype, or nothing for fp32."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16's loss scaling, which keeps small gradients from underflowing; None for fp32 and bf16."""
        return torch.amp.GradScaler(self.device.type) if self.name == "fp16" else None


def resolve(setting: str, device: torch.device) -> Precision:
    """The precision a setting (``auto``, ``fp32``, ``bf16`` or ``fp16``) means on ``device``."""
    if setting != "auto":
        return Precision(setting, device)
    if device.type != "cuda":
        return Precision("fp32", device)
    return Precision("bf16" if torch.cuda.is_bf16_supported() else "fp16", device)


def cast_trainable_to_float32(model) -> None:
    """Trainable parameters in float32, whatever dtype the frozen weights around them were loaded in."""
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
