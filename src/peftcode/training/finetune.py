"""The fine-tuning recipe: one cell's model, method and training split -> the checkpoint of the lowest
validation loss, a per-step training log and the job's memory record.

A plain loop, with the study's recipe as its defaults: Adafactor (or AdamW) with a linear schedule after a
warmup, batches padded to their own longest example and accumulated over ``grad_accum_steps``, frozen
weights in the precision's dtype and the forward under its autocast (fp16 with a gradient scaler), the
validation loss measured ``evals_per_epoch`` times per epoch, and the best trainable weights kept.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup
from transformers.optimization import Adafactor

from peftcode.data.prompts import IGNORE_INDEX, collate, encode_example, prompt_style
from peftcode.data.splits import read_split
from peftcode.hardware.memory import JobMeter, parameter_counts, weight_footprint_mb
from peftcode.hardware.placement import job_device
from peftcode.hardware.precision import Precision
from peftcode.hardware.precision import resolve as resolve_precision
from peftcode.jobs.preemption import Preempted, PreemptionWatch
from peftcode.models.checkpoints import load_checkpoint, model_commit, read_manifest, write_manifest
from peftcode.models.export import make_portable
from peftcode.models.probe import PROBE_FILE, write_probe
from peftcode.study.settings import TrainSettings
from peftcode.training.peft_setup import (
    after_optimizer_step,
    loss_term,
    prepare_for_training,
    rank_allocation,
    restore_rank_allocation,
    rewrites_base,
)

RESUME_FILE = "resume.pt"


def encode_split(frame: pd.DataFrame, tokenizer, settings: TrainSettings) -> list[dict[str, list[int]]]:
    style = prompt_style(settings.prompt, tokenizer)
    return [
        encode_example(
            tokenizer,
            settings.family,
            intent,
            code,
            settings.max_input_length,
            settings.max_target_length,
            style,
        )
        for intent, code in zip(frame["intent"], frame["code"], strict=True)
    ]


def target_loss(model, batch: dict[str, torch.Tensor], family: str) -> torch.Tensor:
    """Mean cross-entropy over a batch's target tokens.

    A causal model's vocabulary logits are computed only at the positions that predict a target token: the
    prompt's would be masked out of the loss anyway, and with a 49k-token vocabulary they are most of a
    small model's training memory. Seq2seq decoders see only the target already.
    """
    if family == "seq2seq":
        return model(**batch).loss
    labels = batch["labels"]
    predicts_target = labels[:, 1:] != IGNORE_INDEX  # the hidden state at i predicts the token at i + 1

    def keep_target_positions(_head, args):
        hidden = args[0]  # on the last GPU of a model spread over several
        offset = hidden.shape[1] - labels.shape[1]  # prompt tuning puts its virtual tokens first
        return (hidden[:, offset : hidden.shape[1] - 1][predicts_target.to(hidden.device)],)

    hook = model.get_output_embeddings().register_forward_pre_hook(keep_target_positions)
    try:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    finally:
        hook.remove()
    targets = labels[:, 1:][predicts_target].to(logits.device)
    return torch.nn.functional.cross_entropy(logits.float(), targets)


def target_tokens(batch: dict[str, torch.Tensor]) -> int:
    return int((batch["labels"] != IGNORE_INDEX).sum())


def make_optimizer(settings: TrainSettings, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The study's optimizer: transformers' Adafactor as its Trainer sets it up for ``optim="adafactor"``
    (the given learning rate, no parameter scaling, no relative step), or AdamW."""
    if settings.optimizer == "adafactor":
        return Adafactor(
            parameters,
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            scale_parameter=False,
            relative_step=False,
            warmup_init=False,
        )
    return torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)


def train_step(
    model,
    batches: list[dict[str, torch.Tensor]],
    family: str,
    precision: Precision,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    max_grad_norm: float | None = None,
    step: int = 0,
) -> tuple[float, float]:
    """One optimizer step, its gradient accumulated over ``batches``; returns the step's loss and the
    gradients' total norm before clipping.

    Each batch's mean loss is weighted by its share of the step's target tokens: the accumulated gradient is
    that of the mean over all of them, as if the step were one batch. fp16 scales the loss for the backward
    pass, and its scaler skips a step whose gradients overflowed. With ``max_grad_norm`` the gradients are
    clipped to that total norm (unscaled first), as transformers' Trainer does by default (1.0).
    """
    step_tokens = sum(target_tokens(batch) for batch in batches)
    step_loss = 0.0
    for batch in batches:
        with precision.autocast():
            share = target_tokens(batch) / step_tokens
            # A seq2seq model computes its own loss, to which PEFT adds AdaLoRA's term already.
            term = loss_term(model) if family == "causal" else 0.0
            loss = (target_loss(model, batch, family) + term) * share
        (scaler.scale(loss) if scaler else loss).backward()
        step_loss += loss.item()
    if scaler is not None:
        scaler.unscale_(optimizer)
    trained = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(trained, max_grad_norm if max_grad_norm else math.inf)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    after_optimizer_step(model, step)
    optimizer.zero_grad(set_to_none=True)
    return step_loss, float(norm)


@torch.no_grad()
def validation_loss(
    model, examples: list[dict], batch_size: int, pad_id: int, family: str, precision: Precision
) -> float:
    """Mean loss per target token over the whole validation split."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id, model.device)
        count = target_tokens(batch)
        with precision.autocast():
            total += target_loss(model, batch, family).item() * count
        tokens += count
    model.train()
    return total / tokens


def trainable_copy(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_resume_state(resume_dir: Path | None, settings: TrainSettings) -> dict | None:
    """The state a killed run of the same settings saved, if any."""
    path = resume_dir / RESUME_FILE if resume_dir else None
    if path is None or not path.is_file():
        return None
    state = torch.load(path, weights_only=False)
    return state if state["settings"] == settings.as_dict() else None


def save_resume_state(resume_dir: Path, state: dict) -> None:
    """Written whole or not at all, so that a kill during the write leaves the previous state."""
    resume_dir.mkdir(parents=True, exist_ok=True)
    partial = resume_dir / f"{RESUME_FILE}.partial"
    torch.save(state, partial)
    os.replace(partial, resume_dir / RESUME_FILE)


def finetune(
    model_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    log_path: str | Path,
    memory_path: str | Path,
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
    the last one: same step counter, parameters, optimizer, schedule, data order and random state.
    """
    meter = JobMeter()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(settings.seed)
    precision = resolve_precision(settings.precision, job_device())
    # A full fine-tune keeps float32 master weights and computes in the precision (mixed precision); the
    # other methods' frozen weights are loaded in it.
    weights_dtype = torch.float32 if settings.kind == "full-ft" else precision.dtype
    model, tokenizer = load_checkpoint(model_dir, settings.family, weights_dtype, gpus, gpu_memory_gb)
    pad_id, family = tokenizer.pad_token_id, settings.family
    train = encode_split(read_split(data_dir, "train"), tokenizer, settings)
    validation = encode_split(read_split(data_dir, "validation"), tokenizer, settings)

    batch_size = settings.batch_size
    examples_per_step = batch_size * settings.grad_accum_steps
    steps_per_epoch = math.ceil(len(train) / examples_per_step)
    total_steps = math.ceil(steps_per_epoch * settings.epochs)
    eval_every = max(1, steps_per_epoch // settings.evals_per_epoch)
    model = prepare_for_training(model, settings, str(model_dir), total_steps)
    model.train()
    # The adapter as initialised, which a base-rewriting initialisation's saved adapter is converted against.
    initial = Path(tempfile.mkdtemp(prefix="peftcode-initial-")) if rewrites_base(settings) else None
    if initial:
        model.save_pretrained(initial)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(settings, trainable)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(settings.warmup_ratio * total_steps), total_steps
    )
    scaler = precision.grad_scaler()
    shuffler = torch.Generator().manual_seed(settings.seed)
    evaluate = partial(
        validation_loss, model, validation, settings.eval_batch_size, pad_id, family, precision
    )

    resume_dir = Path(resume_dir) if resume_dir else None
    resumed = load_resume_state(resume_dir, settings)
    if resumed is None:
        first_step, order, earlier_time, earlier_wall, attempt = 1, None, 0.0, 0.0, 1
        best_loss = evaluate()
        best_step, best_state, best_allocation = 0, None, None
        log = [{"step": 0, "epoch": 0.0, "lr": 0.0, "train_loss": None, "val_loss": best_loss, "tokens": 0}]
        if on_log_row:
            on_log_row(log[0])
        tokens, longest, most_targets = 0, 0, 0
    else:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if parameter.requires_grad:
                    parameter.copy_(resumed["trainable"][name])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        if scaler is not None:
            scaler.load_state_dict(resumed["scaler"])
        shuffler.set_state(resumed["shuffler"])
        torch.set_rng_state(resumed["torch_rng"])
        first_step, order, earlier_time = resumed["step"] + 1, resumed["order"], resumed["train_time"]
        earlier_wall, attempt = resumed["wall_time"], resumed["attempt"] + 1
        best_loss, best_step, best_state = resumed["best"]
        best_allocation = rank_allocation(model)  # AdaLoRA's allocator state is not resumed
        log, tokens = resumed["log"], resumed["tokens"]
        longest, most_targets = resumed["longest"], resumed["most_targets"]
    loop_started = time.perf_counter()
    progress = tqdm(
        range(first_step, total_steps + 1), desc=f"finetune {settings.method_name}", mininterval=5
    )
    with PreemptionWatch() as preemption:
        for step in progress:
            position = (step - 1) % steps_per_epoch
            if position == 0:
                order = torch.randperm(len(train), generator=shuffler).tolist()
            chosen = order[position * examples_per_step : (position + 1) * examples_per_step]
            batches = [
                collate([train[i] for i in chosen[start : start + batch_size]], pad_id, model.device)
                for start in range(0, len(chosen), batch_size)
            ]
            longest = max(longest, *(batch["input_ids"].shape[1] for batch in batches))
            most_targets = max(most_targets, *(target_tokens(batch) for batch in batches))
            step_loss, grad_norm = train_step(
                model, batches, family, precision, optimizer, scaler, settings.max_grad_norm, step
            )
            tokens += sum(int(batch["attention_mask"].sum()) for batch in batches)
            scheduler.step()
            row = {
                "step": step,
                "epoch": round(step / steps_per_epoch, 4),
                "lr": scheduler.get_last_lr()[0],
                "train_loss": step_loss,
                "grad_norm": grad_norm,
                "val_loss": None,
                "tokens": tokens,
            }
            if step % eval_every == 0 or step == total_steps:
                row["val_loss"] = evaluate()
                if row["val_loss"] < best_loss:
                    best_loss, best_step = row["val_loss"], step
                    best_state, best_allocation = trainable_copy(model), rank_allocation(model)
                progress.set_postfix(val_loss=f"{row['val_loss']:.3f}", best=f"{best_loss:.3f}")
            log.append(row)
            if on_log_row:
                on_log_row(row)
            if resume_dir and (row["val_loss"] is not None or preemption.requested) and step < total_steps:
                save_resume_state(
                    resume_dir,
                    {
                        "settings": settings.as_dict(),
                        "step": step,
                        "order": order,
                        "trainable": trainable_copy(model),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "shuffler": shuffler.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        "best": (best_loss, best_step, best_state),
                        "log": log,
                        "tokens": tokens,
                        "longest": longest,
                        "most_targets": most_targets,
                        "train_time": earlier_time + time.perf_counter() - loop_started,
                        "wall_time": earlier_wall + meter.elapsed(),
                        "attempt": attempt,
                    },
                )
            if preemption.requested and step < total_steps:
                saved = f"the state is saved in {resume_dir}" if resume_dir else "no resume folder was given"
                raise Preempted(f"SIGTERM at step {step} of {total_steps}: {saved}")

    if best_state is not None:
        restore_rank_allocation(model, best_allocation)
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in best_state.items():
                parameters[name].copy_(value)
    out_dir = Path(out_dir)
    converted = {"path_initial_model_for_weight_conversion": str(initial)} if initial else {}
    model.save_pretrained(out_dir, **converted)
    if initial:
        shutil.rmtree(initial)
    if settings.kind == "full-ft":
        write_manifest(out_dir, {**read_manifest(model_dir), "weights": "local"})
    write_probe(model, validation[0], pad_id, out_dir / PROBE_FILE, precision)
    train_time = earlier_time + time.perf_counter() - loop_started
    pd.DataFrame(log).to_csv(log_path, index=False)
    record = meter.write(
        memory_path,
        job="finetune",
        **parameter_counts(model),
        weight_footprint_mb=weight_footprint_mb(model),
        precision=precision.name,
        optimizer=settings.optimizer,
        batch_size=batch_size,
        grad_accum_steps=settings.grad_accum_steps,
        max_grad_norm=settings.max_grad_norm,
        eval_batch_size=settings.eval_batch_size,
        # The largest batch's shape, which sets the activations' peak (see peftcode.planning.plan).
        longest_sequence=longest,
        most_target_tokens=most_targets,
        devices=sorted({str(p.device) for p in model.parameters()}),
        model_commit=model_commit(model_dir),
        quantization_bits=(settings.quantization or {}).get("bits"),
        gradient_checkpointing=settings.gradient_checkpointing,
        steps=total_steps,
        resumed_from_step=first_step - 1 if resumed else None,
        train_tokens=tokens,
        train_time_s=round(train_time, 3),
        # Over every attempt, to its last save for a killed one: what the cell cost, not its last run.
        total_wall_time_s=round(earlier_wall + meter.elapsed(), 3),
        attempts=attempt,
        tokens_per_s=round(tokens / train_time, 1),
        best_step=best_step,
        best_val_loss=best_loss,
        initial_val_loss=log[0]["val_loss"],
    )
    make_portable(out_dir, model_dir, tokenizer, settings, record, Path(data_dir).name)
    if resume_dir:
        shutil.rmtree(resume_dir, ignore_errors=True)  # finished: nothing to resume
    return record
