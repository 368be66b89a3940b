"""benchmarks/gpu_check.py's training sections: the memory plan against the CUDA allocator's peaks, and the
loss curves of bf16 and fp16 against fp32."""

from __future__ import annotations

import copy
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch
from gpu_check_common import (
    Deadline,
    Mode,
    Peak,
    Table,
    build_model,
    cuda_context_mb,
    random_examples,
    random_prompts,
    run_row,
    save_model_dir,
    search_problem,
    synchronize,
)

from peftcode.data.prompts import collate
from peftcode.hardware.precision import Precision
from peftcode.hardware.precision import resolve as resolve_precision
from peftcode.inference.beam_search import beam_search
from peftcode.models.checkpoints import bitsandbytes_problem, load_checkpoint
from peftcode.models.quantize_model import quantize_model
from peftcode.planning import plan as planner
from peftcode.study.settings import TrainSettings
from peftcode.training.peft_setup import prepare_for_training
from peftcode.training.steps import make_optimizer, target_loss, train_step, trainable_copy

# The target: every estimate within 15% of the measured peak.
TOLERANCE = 0.15
MEMORY_COLUMNS = [
    "cell", "status", "max allocated (MiB)", "max reserved (MiB)", "measured (MiB)", "estimate (MiB)",
    "error", "plan fits 24 GB", "measured under 24 GB", "steps (loss)", "time (s)", "target",
]  # fmt: skip


def measured_mb(peak: Peak, context_mb: float | None) -> float | None:
    """What the plan estimates, measured: on a GPU the allocator's reserved peak and CUDA's context (the
    plan's runtime part covers both); on the CPU the resident peak's growth."""
    if peak.reserved_mb is not None:
        return peak.reserved_mb + (context_mb or 0.0)
    return peak.rss_mb


def memory_row(table, mode, label, peak, context_mb, estimate, fits, budget_mb, started, losses, ran=None):
    """A cell's row; ``ran`` says what it ran where it took no training steps."""
    measured = measured_mb(peak, context_mb)
    error = None if not measured else (estimate - measured) / measured
    under = None if measured is None or not mode.cuda else measured <= budget_mb
    if not mode.cuda:
        verdict = "n/a on CPU"
    else:
        verdict = "PASS" if abs(error) <= TOLERANCE and (under or not fits) else "FAIL"
    finite = all(math.isfinite(loss) for loss in losses)
    steps = f"{len(losses)} ({losses[-1]:.3f})" if losses else ran
    table.add(
        label,
        "ran" if finite else "non-finite loss",
        peak.allocated_mb if mode.cuda else "n/a on CPU",
        peak.reserved_mb if mode.cuda else "n/a on CPU",
        measured if mode.cuda else (f"{measured:.0f} (RSS growth)" if measured is not None else None),
        estimate,
        None if error is None else f"{error:+.1%}",
        fits,
        under,
        steps,
        round(time.perf_counter() - started, 1),
        verdict,
    )


def finetune_steps(mode: Mode, model_dir: Path, settings: TrainSettings, steps: int) -> list[float]:
    """A cell's first optimizer steps, as peftcode.training.finetune takes them, on random data at the
    configured maximum lengths."""
    precision = resolve_precision(settings.precision, mode.device)
    model, tokenizer = load_checkpoint(model_dir, settings.family, precision.dtype)
    model = prepare_for_training(model, settings, str(model_dir))
    model.train()
    optimizer = make_optimizer(settings, [p for p in model.parameters() if p.requires_grad])
    scaler = precision.grad_scaler()
    batch, accumulated = settings.batch_size, settings.grad_accum_steps
    vocab = model.get_input_embeddings().num_embeddings
    examples = random_examples(
        batch * accumulated * steps, settings.max_input_length, settings.max_target_length, vocab, 0
    )
    losses = []
    for step in range(steps):
        chosen = examples[step * batch * accumulated : (step + 1) * batch * accumulated]
        batches = [
            collate(chosen[i : i + batch], tokenizer.pad_token_id, model.device)
            for i in range(0, len(chosen), batch)
        ]
        step = train_step(
            model, batches, settings.family, precision, optimizer, scaler, settings.max_grad_norm
        )
        losses.append(step[0])
    synchronize()
    return losses


def memory_plan(mode: Mode, cells: dict, scratch: Path, deadline: Deadline) -> Table:
    """Section 1: each fine-tune and the 10-beam inference of the paper's CodeLlama-7B cells, measured
    against the plan's estimate (the same functions as the Snakefile's plan, for the same shape)."""
    table = Table(
        f"1. Memory plan vs measured peak ({mode.big_name}, {cells['dataset']} cells)", MEMORY_COLUMNS
    )
    shape = planner.shape_of_config(dict(mode.big), "causal")
    budget_mb = cells["budget_gb"] * 1024
    base = save_model_dir(mode.big, scratch / "base", torch.float16, mode.device)
    context_mb = cuda_context_mb() if mode.cuda else None
    lora = cells["finetunes"]["lora"]["settings"]
    table.notes.append(
        f"Random weights of {mode.big_name}'s config, saved in float16 and loaded by load_checkpoint; "
        f"{mode.memory_steps} optimizer steps a cell (batches of {lora.batch_size}, "
        f"{lora.grad_accum_steps} accumulated) at the configured maximum lengths."
    )
    table.notes.append(
        f"Measured: the allocator's reserved peak and CUDA's context ({context_mb:.0f} MiB here), which the "
        "plan's runtime part covers."
        if mode.cuda
        else "CPU mode: measured is the growth of the process's resident peak; the target is for a GPU."
    )
    for method, cell in cells["finetunes"].items():
        settings = cell["settings"]

        def work(method=method, settings=settings, fits=cell["plan"]["fits"]) -> None:
            started = time.perf_counter()
            directory = base
            if settings.quantization:
                problem = bitsandbytes_problem(mode.device)
                if problem is not None:
                    table.add(method, f"skipped: {problem}", *[""] * (len(MEMORY_COLUMNS) - 2))
                    return
                directory = scratch / method
                quantize_model(base, directory, "causal", settings.quantization, settings.precision)
            with Peak(mode.cuda) as peak:
                losses = finetune_steps(mode, directory, settings, mode.memory_steps)
            precision = resolve_precision(settings.precision, mode.device).name
            estimate = planner.finetune_peak(shape, settings, mode.device.type, precision)["total"]
            memory_row(table, mode, method, peak, context_mb, estimate, fits, budget_mb, started, losses)
            if directory != base:
                shutil.rmtree(directory)  # a quantized copy: the disk holds the float16 base and one more

        run_row(table, method, deadline, work)

    inference = cells["inference"]
    settings = inference["settings"]
    settings = replace(settings, max_new_tokens=mode.max_new_tokens or settings.max_new_tokens)
    label = f"{inference['variant']} inference: {settings.num_beams}-beam search"
    label += f", batch {settings.batch_size}"

    def infer() -> None:
        started = time.perf_counter()
        if search_problem() is not None:
            table.add(label, f"skipped: {search_problem()}", *[""] * (len(MEMORY_COLUMNS) - 2))
            return
        precision = resolve_precision(settings.precision, mode.device)
        with Peak(mode.cuda) as peak:
            model, tokenizer = load_checkpoint(base, "causal", precision.dtype)
            model.eval()
            vocab = model.get_input_embeddings().num_embeddings
            # Prompts at the configured maximum length, as the plan assumes.
            longest = settings.max_input_length
            prompts = random_prompts(settings.batch_size, longest, vocab, 1, shortest=longest)
            ids = torch.tensor(prompts, device=model.device)
            eos = model.generation_config.eos_token_id
            with precision.autocast():
                found = beam_search(
                    model, ids, torch.ones_like(ids), settings.num_beams,
                    min(settings.num_return_sequences, settings.num_beams), settings.max_new_tokens,
                    [eos] if isinstance(eos, int) else list(eos), torch.tensor([], dtype=torch.long),
                    early_stopping=settings.early_stopping,
                )  # fmt: skip
            synchronize()
        estimate = planner.inference_peak(shape, settings, mode.device.type, precision.name)["total"]
        longest = max(len(h) for hypotheses in found for h in hypotheses)
        fits, ran = inference["plan"]["fits"], f"{longest} new tokens (longest)"
        memory_row(table, mode, label, peak, context_mb, estimate, fits, budget_mb, started, [], ran)

    run_row(table, label, deadline, infer)
    return table


# Tolerances on a step's loss relative to fp32's, over the same steps and data: 5 unit roundoffs u of the
# format (bf16 2^-8: 2%; fp16 2^-11: 0.24%). Each matrix product rounds its operands at about u and
# accumulates in float32, and the loss, a float32 mean over hundreds of target tokens, averages those
# roundings down: SmolLM2's shape on the CPU stayed within 1e-4 of fp32 in both over 6 steps. A precision
# that goes wrong misses by far more: fp16 gradients that underflow unscaled leave the adapters unlearned,
# while fp32's loss falls about 5% in those 6 steps.
NUMERICS_TOLERANCE = {"bf16": 5 * 2**-8, "fp16": 5 * 2**-11}
NUMERICS_COLUMNS = [
    "precision", "steps", "first loss", "last loss", "max rel. diff vs fp32", "tolerance", "finite",
    "loss scale (start -> end)", "scaled loss / loss", "time (s)", "target",
]  # fmt: skip


def numerics(mode: Mode, cells: dict, deadline: Deadline) -> Table:
    """Section 2: LoRA's loss curve in bf16 and in fp16 (loss scaled by torch's GradScaler, as
    peftcode.training.finetune does) against fp32, the same start, steps and data."""
    table = Table(f"2. Numerics: LoRA loss curves against fp32 ({mode.small_name})", NUMERICS_COLUMNS)
    settings = cells["finetunes"]["lora"]["settings"]
    # Lengths of CoNaLa's cells (64 + 64), the same examples every step and a learning rate above the
    # paper's (3e-4): the adapter learns them within the steps, so the curve falls (SmolLM2's shape on the
    # CPU: 10.92 to 10.33 in 6 steps) and a precision that stops learning leaves fp32's.
    settings = replace(settings, max_input_length=64, max_target_length=64, lr=1e-3)
    batch, accumulated = settings.batch_size, settings.grad_accum_steps
    base = build_model(mode.small, torch.float32, mode.device)
    examples = random_examples(batch * accumulated, 64, 64, base.config.vocab_size, 2)
    batches = [collate(examples[i : i + batch], 0, mode.device) for i in range(0, len(examples), batch)]
    curves, start = {}, None
    table.notes.append(
        f"LoRA as the paper's (Adafactor, r {settings.method_settings.r}) at lr {settings.lr}, the same "
        f"{len(examples)} random examples every step, each precision's adapters starting from fp32's."
    )
    for name in ("fp32", "bf16", "fp16"):

        def work(name=name) -> None:
            nonlocal start
            started = time.perf_counter()
            precision = Precision(name, mode.device)
            model = copy.deepcopy(base).to(precision.dtype)
            model = prepare_for_training(model, settings, "")
            if start is None:
                start = trainable_copy(model)
            with torch.no_grad():
                for parameter_name, parameter in model.named_parameters():
                    if parameter.requires_grad:
                        parameter.copy_(start[parameter_name])
            model.train()
            optimizer = make_optimizer(settings, [p for p in model.parameters() if p.requires_grad])
            scaler = precision.grad_scaler()
            first_scale = scaler.get_scale() if scaler else None
            losses = [
                train_step(model, batches, "causal", precision, optimizer, scaler)[0]
                for _ in range(mode.numerics_steps)
            ]
            curves[name] = losses
            ratio = None
            if scaler is not None:
                with precision.autocast():
                    loss = target_loss(model, batches[0], "causal")
                ratio = (scaler.scale(loss) / loss).item()
            reference = curves.get("fp32")
            difference = None
            if reference and name != "fp32":
                difference = max(abs(a - b) / abs(b) for a, b in zip(losses, reference, strict=True))
            finite = all(math.isfinite(loss) for loss in losses)
            tolerance = NUMERICS_TOLERANCE.get(name)
            scales = f"{first_scale:g} -> {scaler.get_scale():g}" if scaler else "n/a (no scaler)"
            verdict = (
                "reference"
                if name == "fp32"
                else "PASS"
                if finite and difference is not None and difference <= tolerance
                else "FAIL"
            )
            if scaler is not None and not (scaler.get_scale() > 1 and ratio != 1.0):
                verdict = "FAIL"
            differences = [None if x is None else f"{x:.2e}" for x in (difference, tolerance)]
            elapsed = round(time.perf_counter() - started, 1)
            table.add(
                name,
                len(losses),
                losses[0],
                losses[-1],
                *differences,
                finite,
                scales,
                ratio,
                elapsed,
                verdict,
            )

        run_row(table, name, deadline, work)
    return table
