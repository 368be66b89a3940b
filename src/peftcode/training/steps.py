"""The training steps of a fine-tune: its examples encoded, the loss on target tokens, the study's
optimizer, one optimizer step over accumulated batches, and the validation loss."""

from __future__ import annotations

import math

import pandas as pd
import torch
from transformers.optimization import Adafactor

from peftcode.data.prompts import IGNORE_INDEX, collate, encode_example, prompt_style
from peftcode.hardware.precision import Precision
from peftcode.study.families import is_encoder_decoder
from peftcode.study.settings import TrainSettings
from peftcode.training.peft_setup import after_optimizer_step, loss_term


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
    if is_encoder_decoder(family):
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
            term = loss_term(model) if not is_encoder_decoder(family) else 0.0
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


@torch.no_grad()
def load_trainable(model, state: dict[str, torch.Tensor]) -> None:
    """Trainable weights saved by :func:`trainable_copy` put back into the model, in place."""
    parameters = dict(model.named_parameters())
    for name, value in state.items():
        parameters[name].copy_(value)
