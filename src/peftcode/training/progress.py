"""Where a fine-tune stands (after torchtune's ``TrainingProgress``): its last finished step, data order,
best weights, log, counters and times, saved whole with the optimizer's, schedule's and random streams'
states at every validation, so that a run killed by SIGKILL or preemption continues from the last save as
if it had not stopped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from peftcode.study.settings import TrainSettings

RESUME_FILE = "resume.pt"


@dataclass
class TrainingProgress:
    """A fine-tune's own state between steps (the model's, optimizer's and schedule's are theirs)."""

    step: int = 0  # the last step finished
    order: list[int] | None = None  # this epoch's order of the training examples
    best_loss: float = float("inf")
    best_step: int = 0
    best_state: dict[str, torch.Tensor] | None = None  # the trainable weights of the best validation loss
    best_allocation: object = None  # AdaLoRA's rank allocation at the best step (not resumed)
    log: list[dict] = field(default_factory=list)
    tokens: int = 0
    longest: int = 0  # the longest batch so far, and its most target tokens: the activations' peak
    most_targets: int = 0
    train_time: float = (
        0.0  # seconds in the training loop, over the attempts before (and this one's, at its end)
    )
    wall_time: float = 0.0  # seconds of the job over the attempts before (each to its last save)
    attempt: int = 1
    resumed_from: int | None = None  # the step this attempt resumed after

    def better(self, loss: float, step: int) -> bool:
        """Whether ``loss`` at ``step`` is the best validation loss so far (then it is kept)."""
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, step
            return True
        return False

    def save(
        self, resume_dir: Path, settings: TrainSettings, training_states: dict, train_s: float, wall_s: float
    ) -> None:
        """Written whole or not at all, so that a kill during the write leaves the previous save; with the
        seconds this attempt has trained (``train_s``) and run (``wall_s``) so far."""
        state = {
            "settings": settings.as_dict(),
            "step": self.step,
            "order": self.order,
            **training_states,
            "best": (self.best_loss, self.best_step, self.best_state),
            "log": self.log,
            "tokens": self.tokens,
            "longest": self.longest,
            "most_targets": self.most_targets,
            "train_time": self.train_time + train_s,
            "wall_time": self.wall_time + wall_s,
            "attempt": self.attempt,
        }
        resume_dir.mkdir(parents=True, exist_ok=True)
        partial = resume_dir / f"{RESUME_FILE}.partial"
        torch.save(state, partial)
        os.replace(partial, resume_dir / RESUME_FILE)

    @classmethod
    def load(cls, resume_dir: Path | None, settings: TrainSettings) -> tuple[TrainingProgress, dict] | None:
        """The progress a killed run of the same settings saved, and the training states saved with it
        (trainable weights, optimizer, schedule, scaler, random streams); None where there is none."""
        path = resume_dir / RESUME_FILE if resume_dir else None
        if path is None or not path.is_file():
            return None
        state = torch.load(path, weights_only=False)
        if state["settings"] != settings.as_dict():
            return None
        best_loss, best_step, best_state = state["best"]
        progress = cls(
            step=state["step"],
            order=state["order"],
            best_loss=best_loss,
            best_step=best_step,
            best_state=best_state,
            log=state["log"],
            tokens=state["tokens"],
            longest=state["longest"],
            most_targets=state["most_targets"],
            train_time=state["train_time"],
            wall_time=state["wall_time"],
            attempt=state["attempt"] + 1,
            resumed_from=state["step"],
        )
        return progress, state
