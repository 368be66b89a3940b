"""The GPU paths of the study, checked on a GPU in one run: models of real configs with random weights (no
download), random data, four sections, each a markdown table on standard output and in ``--out``.

1. Memory plan vs CUDA: the paper's CodeLlama-7B cells (fp16, Adafactor, its batch and lengths), a few
   training steps each of LoRA, IA3, prompt and prefix tuning and QLoRA at 8 and 4 bits (bitsandbytes'
   CUDA kernels), and one batch of 10-beam search: the allocator's peaks beside the plan's estimate
   (peftcode.planning.plan, as the Snakefile plans), the error, and the 24 GB budget planned and measured.
2. Numerics: LoRA's loss curve in bf16 and fp16 (loss scaled by a GradScaler) against fp32 (SmolLM2-135M).
3. Decoding: peftcode's beam search and sampler against transformers' ``generate`` on the same prompts
   (SmolLM2-135M, and CodeLlama-7B at batch 8): identical sequences, first divergence, sequences/second.
4. Placement: a model placed by peftcode.hardware.placement on the GPU, and spread over two devices, trains a
step.

A section that needs what the machine lacks (CUDA, bitsandbytes, a second GPU) says so in a row; a failure
is reported in its row or its section's table and the others still run. Results are measurements: the
script exits 0 whatever they are. Without CUDA (or with ``--cpu``) it runs a reduced mode: a tiny llama
config and a handful of steps, every section end to end (tests/workflow/test_gpu_check.py runs it).

Usage: python benchmarks/gpu_check.py [--cpu] [--out gpu_check.md] [--sections 1,2,3,4] [--budget-s 420]
On the GPU machine: bash benchmarks/gpu_check.sh (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from gpu_check_cells import read_cells
from gpu_check_common import (
    Deadline,
    Mode,
    Table,
    cpu_mode,
    gpu_mode,
    random_examples,
    run_row,
    save_model_dir,
    search_problem,
)
from gpu_check_decoding import decoding
from gpu_check_training import memory_plan, numerics

from peftcode.data.prompts import collate
from peftcode.hardware.placement import MODEL_CLASSES, meta_model, spread_device_map
from peftcode.hardware.precision import resolve as resolve_precision
from peftcode.models.checkpoints import load_checkpoint
from peftcode.study.settings import TrainSettings
from peftcode.training.peft_setup import prepare_for_training
from peftcode.training.steps import make_optimizer, train_step, trainable_copy

PLACEMENT_COLUMNS = [
    "placement", "status", "device map", "loss", "finite", "trainable tensors changed", "parameters on",
    "time (s)", "target",
]  # fmt: skip


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(mode: Mode) -> Table:
    table = Table("Environment", ["what", "value"])
    table.add("python", platform.python_version())
    table.add("torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})")
    if mode.cuda:
        properties = torch.cuda.get_device_properties(0)
        gpus = torch.cuda.device_count()
        table.add("device", f"{gpus} x {properties.name}, {properties.total_memory / 2**30:.0f} GiB")
        table.add("bf16 supported", torch.cuda.is_bf16_supported())
    else:
        table.add("device", "cpu (reduced mode: a tiny config, a handful of steps)")
    for package in ("transformers", "peft", "accelerate", "bitsandbytes"):
        table.add(package, version(package))
    table.add("peftcode's search", search_problem() or "runs with this transformers")
    return table


def summarized(device_map: dict) -> str:
    """A device map as modules per device."""
    if set(device_map) == {""}:
        return f"whole model on {device_map['']}"
    counts: dict[str, int] = {}
    for device in device_map.values():
        counts[str(device)] = counts.get(str(device), 0) + 1
    return ", ".join(f"{count} modules on {device}" for device, count in counts.items())


def lora_step(
    table: Table, label: str, model, model_dir: Path, settings: TrainSettings, device_map, started
) -> None:
    """One LoRA optimizer step through the fine-tune's own code, wherever the model's layers are."""
    precision = resolve_precision(settings.precision, model.device)
    model = prepare_for_training(model, settings, str(model_dir))
    model.train()
    before = trainable_copy(model)
    optimizer = make_optimizer(settings, [p for p in model.parameters() if p.requires_grad])
    examples = random_examples(settings.batch_size, 32, 32, model.get_input_embeddings().num_embeddings, 4)
    batch = collate(examples, 0, model.device)
    loss, _ = train_step(model, [batch], "causal", precision, optimizer, precision.grad_scaler())
    moved = sum(not torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad)
    finite = torch.isfinite(torch.tensor(loss)).item()
    devices = ", ".join(sorted({str(p.device) for p in model.parameters()}))
    verdict = "PASS" if finite and moved else "FAIL"
    elapsed = round(time.perf_counter() - started, 1)
    moved_text = f"{moved} of {len(before)}"
    table.add(label, "ran", summarized(device_map), loss, finite, moved_text, devices, elapsed, verdict)


def offloaded_step(
    table: Table, label: str, model_dir: Path, settings: TrainSettings, spread: dict, started
) -> None:
    """With one GPU: the two-GPU spread with GPU 1's half held in host memory by accelerate, which runs
    it on GPU 0 (a second device it moves each of those layers' weights from): a forward and backward of
    the frozen model, its gradient reaching the input embeddings through both halves."""
    precision = resolve_precision(settings.precision, torch.device("cuda"))
    mapped = {name: 0 if device == 0 else "cpu" for name, device in spread.items()}
    model = MODEL_CLASSES["causal"].from_pretrained(model_dir, dtype=precision.dtype, device_map=mapped)
    ids = torch.tensor([e["input_ids"] for e in random_examples(2, 32, 32, model.config.vocab_size, 5)])
    ids = ids.to("cuda")
    embeddings = model.get_input_embeddings()(ids).detach().requires_grad_()
    with precision.autocast():
        loss = model(inputs_embeds=embeddings, labels=ids).loss
    loss.backward()
    finite = bool(torch.isfinite(loss).item() and torch.isfinite(embeddings.grad).all().item())
    reached = bool(embeddings.grad.abs().sum().item() > 0)
    table.add(label, "ran (forward and backward, frozen)", summarized(mapped), loss.item(), finite,
              "input gradient " + ("nonzero" if reached else "zero"), "cuda:0 and cpu (offloaded)",
              round(time.perf_counter() - started, 1), "PASS" if finite and reached else "FAIL")  # fmt: skip


def placement(mode: Mode, cells: dict, scratch: Path, deadline: Deadline) -> Table:
    """Section 4: peftcode.hardware.placement's device maps, and a training step on the placed model."""
    table = Table(f"4. Placement ({mode.small_name})", PLACEMENT_COLUMNS)
    settings = replace(cells["finetunes"]["lora"]["settings"], max_input_length=32, max_target_length=32)
    precision = resolve_precision(settings.precision, mode.device)
    model_dir = save_model_dir(mode.small, scratch / "placed", precision.dtype, mode.device)

    def one_device() -> None:
        started = time.perf_counter()
        model, _ = load_checkpoint(model_dir, "causal", precision.dtype, gpus=1)
        device_map = getattr(model, "hf_device_map", None) or {"": str(model.device)}
        lora_step(
            table, "one device (load_checkpoint, gpus=1)", model, model_dir, settings, device_map, started
        )

    run_row(table, "one device", deadline, one_device)

    def two_devices() -> None:
        started = time.perf_counter()
        label = "two devices (spread_device_map over 2 GPUs)"
        gpus = torch.cuda.device_count() if mode.cuda else 0
        if gpus >= 2:
            model, _ = load_checkpoint(model_dir, "causal", precision.dtype, gpus=2)
            lora_step(table, label, model, model_dir, settings, model.hf_device_map, started)
            return
        fields = dict(mode.small)
        from transformers import AutoConfig

        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        memory_gb = torch.cuda.get_device_properties(0).total_memory / 2**30 if gpus else 24
        spread = spread_device_map(meta_model(config, "causal"), 2, memory_gb, precision.dtype)
        if not gpus:
            table.add(label, "planned, not run: needs CUDA", summarized(spread), *[""] * 5, "n/a on CPU")
            return
        offloaded_step(
            table, label + ", GPU 1 as host memory (one GPU)", model_dir, settings, spread, started
        )

    run_row(table, "two devices", deadline, two_devices)
    return table


def scratch_root(mode: Mode) -> str | None:
    """Where model directories go: in memory (/dev/shm) where it has room, since a 7B model's float16
    weights and a quantized copy are 20 GB, which a slow disk would take minutes to write and read."""
    shm = Path("/dev/shm")
    if mode.cuda and shm.is_dir() and shutil.disk_usage(shm).free > 32 * 2**30:
        return str(shm)
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu", action="store_true", help="the reduced mode, even where CUDA is available")
    parser.add_argument("--out", default="gpu_check.md", help="the file every table is written to")
    parser.add_argument("--sections", default="1,2,3,4")
    parser.add_argument(
        "--budget-s", type=float, help="rows that would start later say they were skipped (GPU default: 420)"
    )
    args = parser.parse_args(argv)
    mode = cpu_mode() if args.cpu or not torch.cuda.is_available() else gpu_mode()
    deadline = Deadline(args.budget_s if args.budget_s is not None else (420 if mode.cuda else None))
    cells = read_cells()
    out = Path(args.out)
    tables = [environment(mode)]
    print(tables[0].markdown(), flush=True)
    sections = {
        "1": ("1. Memory plan", lambda scratch: memory_plan(mode, cells, scratch, deadline)),
        "2": ("2. Numerics", lambda scratch: numerics(mode, cells, deadline)),
        "3": ("3. Decoding", lambda scratch: decoding(mode, deadline)),
        "4": ("4. Placement", lambda scratch: placement(mode, cells, scratch, deadline)),
    }
    started = time.perf_counter()
    for number in args.sections.split(","):
        title, run = sections[number.strip()]
        with tempfile.TemporaryDirectory(prefix="gpu_check_", dir=scratch_root(mode)) as scratch:
            try:
                table = run(Path(scratch))
            except Exception as error:  # noqa: BLE001 (the other sections still run)
                table = Table(title, ["section", "error"])
                table.fail(title, error)
        tables.append(table)
        print(table.markdown(), flush=True)
        # Written after each section, so that a run cut short keeps what it measured.
        out.write_text("\n".join(t.markdown() for t in tables))
    print(f"all sections in {time.perf_counter() - started:.0f} s; tables in {out}", flush=True)


if __name__ == "__main__":
    main()
