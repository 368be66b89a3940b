"""The checkpoint probe: what a fine-tune's kept checkpoint predicts on one fixed validation example,
recorded beside it, so that inference can check that it loaded the same model (adapter, quantization and
all). Shared by the fine-tune and inference jobs, so that neither's code version covers the other's."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from peftcode.data.prompts import collate
from peftcode.hardware.precision import Precision

PROBE_FILE = "validation_probe.json"


@torch.no_grad()
def probe_predictions(model, example: dict[str, list[int]], pad_id: int, precision: Precision) -> list[int]:
    """The model's top-1 token at every position of one validation example, under teacher forcing."""
    model.eval()
    with precision.autocast():
        logits = model(**collate([example], pad_id, model.device)).logits
    return logits[0].argmax(-1).tolist()


def write_probe(model, example: dict[str, list[int]], pad_id: int, path: Path, precision: Precision) -> None:
    """Record what the kept checkpoint predicts on a fixed validation example, so that inference can check
    it loaded the same model (adapter, quantization and all)."""
    top1 = probe_predictions(model, example, pad_id, precision)
    path.write_text(json.dumps({"example": example, "pad_id": pad_id, "top1": top1}))


def probe_agreement(model, checkpoint_dir: Path, precision: Precision) -> float | None:
    """The share of the fine-tune's recorded top-1 predictions on its probe example that the loaded model
    reproduces; None for a checkpoint without a probe (an untuned base model)."""
    return recorded_agreement(
        checkpoint_dir, lambda probe: probe_predictions(model, probe["example"], probe["pad_id"], precision)
    )


def recorded_agreement(checkpoint_dir: Path, predict) -> float | None:
    """The share of the recorded top-1 predictions that ``predict`` (the probe -> its top-1 tokens)
    reproduces; None for a checkpoint without a probe."""
    probe = recorded_probe(checkpoint_dir)
    if probe is None:
        return None
    top1 = predict(probe)
    return sum(a == b for a, b in zip(top1, probe["top1"], strict=True)) / len(top1)


def recorded_probe(checkpoint_dir: Path) -> dict | None:
    """The probe recorded beside a fine-tune's checkpoint: its example, pad id and top-1 predictions."""
    path = Path(checkpoint_dir) / PROBE_FILE
    return json.loads(path.read_text()) if path.is_file() else None
