"""The fine-tuning recipe: one cell's model, method and training split -> the checkpoint of the lowest
validation loss, a per-step training log and the job's cost record.

A plain loop, with the study's recipe as its defaults: Adafactor (or AdamW) with a linear schedule after a
warmup, batches padded to their own longest example and accumulated over ``grad_accum_steps``, frozen
weights in the precision's dtype and the forward under its autocast (fp16 with a gradient scaler), the
validation loss measured ``evals_per_epoch`` times per epoch, and the best trainable weights kept.

In phases, after torchtune's single-device LoRA recipe: :func:`set_up` (model, data, optimizer),
:func:`start_or_resume` (a :class:`~peftcode.training.progress.TrainingProgress`), :func:`train_steps`
(saving the progress at every validation), :func:`save_checkpoint` and :func:`write_record`.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from peftcode.data.prompts import collate
from peftcode.data.splits import read_split
from peftcode.hardware.memory import JobMeter, parameter_counts, weight_footprint_mb
from peftcode.hardware.placement import job_device
from peftcode.hardware.precision import Precision
from peftcode.hardware.precision import resolve as resolve_precision
from peftcode.jobs.preemption import Preempted, PreemptionWatch, mark_finished, mark_started
from peftcode.models.checkpoints import load_checkpoint, model_commit, read_manifest, write_manifest
from peftcode.models.export import make_portable
from peftcode.models.probe import PROBE_FILE, write_probe
from peftcode.study.kinds import KINDS
from peftcode.study.settings import TrainSettings
from peftcode.training import steps
from peftcode.training.peft_setup import (
    prepare_for_training,
    rank_allocation,
    restore_rank_allocation,
    rewrites_base,
)
from peftcode.training.progress import TrainingProgress


@dataclass(frozen=True)
class Schedule:
    """A fine-tune's step arithmetic: examples a step (a batch accumulated ``grad_accum_steps`` times),
    steps an epoch and in all, and how often the validation loss is measured."""

    batch_size: int
    examples_per_step: int
    steps_per_epoch: int
    total_steps: int
    eval_every: int

    @classmethod
    def of(cls, settings: TrainSettings, examples: int) -> Schedule:
        examples_per_step = settings.batch_size * settings.grad_accum_steps
        steps_per_epoch = math.ceil(examples / examples_per_step)
        return cls(
            batch_size=settings.batch_size,
            examples_per_step=examples_per_step,
            steps_per_epoch=steps_per_epoch,
            total_steps=math.ceil(steps_per_epoch * settings.epochs),
            eval_every=max(1, steps_per_epoch // settings.evals_per_epoch),
        )

    def validates(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.total_steps


@dataclass
class Training:
    """What the steps run on, set up once: the model, its data, its optimizer and schedule."""

    settings: TrainSettings
    model: torch.nn.Module
    tokenizer: object
    precision: Precision
    train: list[dict]
    validation: list[dict]
    schedule: Schedule
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    shuffler: torch.Generator  # the data order's own random stream
    initial: Path | None  # the adapter as initialised, for a base-rewriting initialisation

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def validation_loss(self) -> float:
        settings = self.settings
        return steps.validation_loss(
            self.model,
            self.validation,
            settings.eval_batch_size,
            self.pad_id,
            settings.family,
            self.precision,
        )

    def states(self) -> dict:
        """What a resumed run needs besides its progress: trainable weights, optimizer, schedule, scaler and
        the random streams."""
        return {
            "trainable": steps.trainable_copy(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "shuffler": self.shuffler.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def restore(self, states: dict) -> None:
        steps.load_trainable(self.model, states["trainable"])
        self.optimizer.load_state_dict(states["optimizer"])
        self.scheduler.load_state_dict(states["scheduler"])
        if self.scaler is not None:
            self.scaler.load_state_dict(states["scaler"])
        self.shuffler.set_state(states["shuffler"])
        torch.set_rng_state(states["torch_rng"])


def finetune(
    model_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    log_path: str | Path,
    cost_path: str | Path,
    settings: TrainSettings,
    threads: int | None = None,
    resume_dir: str | Path | None = None,
    gpus: int = 1,
    gpu_memory_gb: float | None = None,
    on_log_row: Callable[[dict], None] | None = None,
) -> dict:
    """Fine-tune one cell on the job's device (or spread over its ``gpus``); returns its memory and cost
    record. ``on_log_row`` sees each training-log row as it is made (experiment tracking follows them).

    With ``resume_dir`` (outside the job's outputs, which Snakemake deletes before a rerun), the run saves
    its whole state there at every validation, and a run killed by SIGKILL or preemption continues from
    the last one: same step counter, parameters, optimizer, schedule, data order and random state. A
    finished run leaves its last save there, marked finished, for a retry of a job SLURM marked TIMEOUT
    after it finished (:mod:`peftcode.jobs.preemption`).
    """
    meter = JobMeter()
    training = set_up(model_dir, data_dir, settings, threads, gpus, gpu_memory_gb)
    resume_dir = Path(resume_dir) if resume_dir else None
    mark_started(resume_dir)
    progress = start_or_resume(training, resume_dir, on_log_row)
    train_steps(training, progress, resume_dir, meter, on_log_row)
    save_checkpoint(training, progress, model_dir, out_dir)
    pd.DataFrame(progress.log).to_csv(log_path, index=False)
    record = write_record(training, progress, model_dir, cost_path, meter)
    make_portable(out_dir, model_dir, training.tokenizer, settings, record, Path(data_dir).name)
    mark_finished(resume_dir)  # its last save kept until the study's run ends (jobs.preemption)
    return record


def set_up(
    model_dir, data_dir, settings: TrainSettings, threads: int | None, gpus: int, gpu_memory_gb: float | None
) -> Training:
    """The model (with its adapter), the encoded splits, the optimizer and the schedule, in the order that
    draws the same random numbers on every run of the same settings."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(settings.seed)
    precision = resolve_precision(settings.precision, job_device())
    # A full fine-tune keeps float32 master weights and computes in the precision (mixed precision); the
    # other methods' frozen weights are loaded in it.
    weights_dtype = torch.float32 if KINDS[settings.kind].full_weights else precision.dtype
    model, tokenizer = load_checkpoint(model_dir, settings.family, weights_dtype, gpus, gpu_memory_gb)
    train = steps.encode_split(read_split(data_dir, "train"), tokenizer, settings)
    validation = steps.encode_split(read_split(data_dir, "validation"), tokenizer, settings)
    schedule = Schedule.of(settings, len(train))
    model = prepare_for_training(model, settings, str(model_dir), schedule.total_steps)
    model.train()
    initial = Path(tempfile.mkdtemp(prefix="peftcode-initial-")) if rewrites_base(settings) else None
    if initial:
        model.save_pretrained(initial)
    optimizer = steps.make_optimizer(settings, [p for p in model.parameters() if p.requires_grad])
    warmup = round(settings.warmup_ratio * schedule.total_steps)
    return Training(
        settings=settings,
        model=model,
        tokenizer=tokenizer,
        precision=precision,
        train=train,
        validation=validation,
        schedule=schedule,
        optimizer=optimizer,
        scheduler=get_linear_schedule_with_warmup(optimizer, warmup, schedule.total_steps),
        scaler=precision.grad_scaler(),
        shuffler=torch.Generator().manual_seed(settings.seed),
        initial=initial,
    )


def start_or_resume(
    training: Training, resume_dir: Path | None, on_log_row: Callable[[dict], None] | None
) -> TrainingProgress:
    """The progress a killed run of the same settings saved, its states restored; else a new one, from the
    validation loss before any step."""
    saved = TrainingProgress.load(resume_dir, training.settings)
    if saved is not None:
        progress, states = saved
        training.restore(states)
        progress.best_allocation = rank_allocation(training.model)  # AdaLoRA's allocator is not resumed
        return progress
    loss = training.validation_loss()
    first = {"step": 0, "epoch": 0.0, "lr": 0.0, "train_loss": None, "val_loss": loss, "tokens": 0}
    if on_log_row:
        on_log_row(first)
    return TrainingProgress(best_loss=loss, log=[first])


def train_steps(
    training: Training,
    progress: TrainingProgress,
    resume_dir: Path | None,
    meter: JobMeter,
    on_log_row: Callable[[dict], None] | None,
) -> None:
    """The steps left, each logged; the progress saved at every validation and, on preemption, at the step
    it arrives in, which then stops the job."""
    total, started = training.schedule.total_steps, time.perf_counter()
    bar = tqdm(
        range(progress.step + 1, total + 1), desc=f"finetune {training.settings.method}", mininterval=5
    )
    with PreemptionWatch() as preemption:
        for step in bar:
            row = one_step(training, progress, step)
            if row["val_loss"] is not None:
                bar.set_postfix(val_loss=f"{row['val_loss']:.3f}", best=f"{progress.best_loss:.3f}")
            progress.log.append(row)
            progress.step = step
            if on_log_row:
                on_log_row(row)
            if resume_dir and (row["val_loss"] is not None or preemption.requested) and step < total:
                elapsed = time.perf_counter() - started
                progress.save(resume_dir, training.settings, training.states(), elapsed, meter.elapsed())
            if preemption.requested and step < total:
                saved = f"the state is saved in {resume_dir}" if resume_dir else "no resume folder was given"
                raise Preempted(f"SIGTERM at step {step} of {total}: {saved}")
    progress.train_time += time.perf_counter() - started


def one_step(training: Training, progress: TrainingProgress, step: int) -> dict:
    """One optimizer step over the next examples of the epoch's order (a new order at each epoch's start),
    and the validation loss where the schedule measures it; returns the step's log row."""
    schedule, settings, model = training.schedule, training.settings, training.model
    position = (step - 1) % schedule.steps_per_epoch
    if position == 0:
        progress.order = torch.randperm(len(training.train), generator=training.shuffler).tolist()
    size = schedule.batch_size
    chosen = progress.order[
        position * schedule.examples_per_step : (position + 1) * schedule.examples_per_step
    ]
    batches = [
        collate([training.train[i] for i in chosen[start : start + size]], training.pad_id, model.device)
        for start in range(0, len(chosen), size)
    ]
    progress.longest = max(progress.longest, *(batch["input_ids"].shape[1] for batch in batches))
    progress.most_targets = max(progress.most_targets, *(steps.target_tokens(batch) for batch in batches))
    loss, grad_norm = steps.train_step(
        model,
        batches,
        settings.family,
        training.precision,
        training.optimizer,
        training.scaler,
        settings.max_grad_norm,
        step,
    )
    progress.tokens += sum(int(batch["attention_mask"].sum()) for batch in batches)
    training.scheduler.step()
    row = {
        "step": step,
        "epoch": round(step / schedule.steps_per_epoch, 4),
        "lr": training.scheduler.get_last_lr()[0],
        "train_loss": loss,
        "grad_norm": grad_norm,
        "val_loss": None,
        "tokens": progress.tokens,
    }
    if schedule.validates(step):
        row["val_loss"] = training.validation_loss()
        if progress.better(row["val_loss"], step):
            progress.best_state = steps.trainable_copy(model)
            progress.best_allocation = rank_allocation(model)
    return row


def save_checkpoint(training: Training, progress: TrainingProgress, model_dir, out_dir) -> None:
    """The best validation loss's weights saved as the checkpoint (a full fine-tune's with its manifest),
    and the probe of what it predicts."""
    model = training.model
    if progress.best_state is not None:
        restore_rank_allocation(model, progress.best_allocation)
        steps.load_trainable(model, progress.best_state)
    out_dir = Path(out_dir)
    initial = training.initial
    converted = {"path_initial_model_for_weight_conversion": str(initial)} if initial else {}
    model.save_pretrained(out_dir, **converted)
    if initial:
        shutil.rmtree(initial)
    if KINDS[training.settings.kind].full_weights:
        write_manifest(out_dir, {**read_manifest(model_dir), "weights": "local"})
    write_probe(model, training.validation[0], training.pad_id, out_dir / PROBE_FILE, training.precision)


def write_record(
    training: Training, progress: TrainingProgress, model_dir, cost_path, meter: JobMeter
) -> dict:
    """The job's cost record: memory, parameters, settings that size a step, times and losses."""
    settings, model = training.settings, training.model
    return meter.write(
        cost_path,
        job="finetune",
        **parameter_counts(model),
        weight_footprint_mb=weight_footprint_mb(model),
        precision=training.precision.name,
        optimizer=settings.optimizer,
        batch_size=settings.batch_size,
        grad_accum_steps=settings.grad_accum_steps,
        max_grad_norm=settings.max_grad_norm,
        eval_batch_size=settings.eval_batch_size,
        # The largest batch's shape, which sets the activations' peak (see peftcode.planning.plan).
        longest_sequence=progress.longest,
        most_target_tokens=progress.most_targets,
        devices=sorted({str(p.device) for p in model.parameters()}),
        model_commit=model_commit(model_dir),
        quantization_bits=(settings.quantization or {}).get("bits"),
        gradient_checkpointing=settings.gradient_checkpointing,
        steps=training.schedule.total_steps,
        resumed_from_step=progress.resumed_from,
        train_tokens=progress.tokens,
        train_time_s=round(progress.train_time, 3),
        # Over every attempt, to its last save for a killed one: what the cell cost, not its last run.
        total_wall_time_s=round(progress.wall_time + meter.elapsed(), 3),
        attempts=progress.attempt,
        tokens_per_s=round(progress.tokens / progress.train_time, 1),
        best_step=progress.best_step,
        best_val_loss=progress.best_loss,
        initial_val_loss=progress.log[0]["val_loss"],
    )
