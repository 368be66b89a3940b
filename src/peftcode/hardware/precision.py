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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torch is imported where a job computes, not here: the plan resolves precisions while the Snakefile is
# parsed, which never needs torch.
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def resolved_name(setting: str, device_type: str, bf16_supported: bool = True) -> str:
    """The precision a setting (``auto``, ``fp32``, ``bf16`` or ``fp16``) means on a device of
    ``device_type``; the plan, which runs before any device is seen, assumes a GPU supports bf16."""
    if setting != "auto":
        return setting
    if device_type != "cuda":
        return "fp32"
    return "bf16" if bf16_supported else "fp16"


@dataclass(frozen=True)
class Precision:
    name: str  # fp32, bf16 or fp16, resolved
    device: torch.device

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, DTYPE_NAMES[self.name])

    def autocast(self):
        """The context a forward runs in: autocast to the precision's dtype, or nothing for fp32."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16's loss scaling, which keeps small gradients from underflowing; None for fp32 and bf16."""
        import torch

        return torch.amp.GradScaler(self.device.type) if self.name == "fp16" else None


def resolve(setting: str, device: torch.device) -> Precision:
    """The precision a setting means on the job's ``device``."""
    if setting != "auto":
        return Precision(setting, device)
    import torch

    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return Precision(resolved_name(setting, device.type, bf16), device)


def cast_trainable_to_float32(model) -> None:
    """Trainable parameters in float32, whatever dtype the frozen weights around them were loaded in."""
    import torch

    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
