"""What benchmarks/gpu_check.py's sections share: the run's mode (the GPU's real shapes, or the CPU's tiny
one), models of a real config with random weights, model directories as the pipeline writes them, random
training data, peak memory, the time budget and the markdown tables."""

from __future__ import annotations

import gc
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from peftcode.data.prompts import IGNORE_INDEX
from peftcode.hardware.memory import _status_mb
from peftcode.models.checkpoints import write_manifest

SHAPES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "configs"
# A llama of two small layers, for the CPU mode: every section's code runs end to end in seconds.
TINY = {
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512, "vocab_size": 512,
    "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
}  # fmt: skip
# The word-level tokenizer's special tokens take the first ids, as in llama's vocabularies (<s> 1, </s> 2);
# random data draws its ids above them, so that no prompt ends early.
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]
WORDS = "Generate Python code given a natural language instruction def return for in if else import".split()
FIRST_ID = len(SPECIAL) + len(WORDS)


def shape_fields(name: str) -> dict:
    """A shape from tests/fixtures/configs (SmolLM2's), or one the package ships for a hub model."""
    from peftcode.models.hub_config import shipped_fields

    path = SHAPES / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else shipped_fields(name)


@dataclass(frozen=True)
class Mode:
    """Where the check runs and how much of each section: the GPU's real shapes and sizes, or the CPU's
    reduced run (a tiny config, a handful of steps) that exercises the same code."""

    device: torch.device
    big: dict  # CodeLlama-7B's config fields (the memory plan, decoding at batch 8)
    small: dict  # SmolLM2-135M's (numerics, decoding, placement)
    big_name: str
    small_name: str
    memory_steps: int
    numerics_steps: int
    max_new_tokens: int | None  # the inference row's (None: the cell's own)
    decoding: dict = field(default_factory=dict)  # model name -> (prompts, new tokens, beams, draws)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def gpu_mode() -> Mode:
    return Mode(
        device=torch.device("cuda"),
        big=shape_fields("codellama/CodeLlama-7b-hf"),
        small=shape_fields("smollm2-135m"),
        big_name="CodeLlama-7B",
        small_name="SmolLM2-135M",
        memory_steps=3,
        numerics_steps=20,
        max_new_tokens=None,
        decoding={"SmolLM2-135M": (16, 32, 10, 10), "CodeLlama-7B": (8, 8, 10, 4)},
    )


def cpu_mode() -> Mode:
    return Mode(
        device=torch.device("cpu"),
        big=TINY,
        small=TINY,
        big_name="tiny llama (for CodeLlama-7B)",
        small_name="tiny llama (for SmolLM2-135M)",
        memory_steps=2,
        numerics_steps=4,
        max_new_tokens=16,
        decoding={"tiny llama": (4, 8, 4, 3)},
    )


def build_model(fields: dict, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """A causal model of ``fields``' shape with random weights (the config's own initialization), built
    on ``device``: a 7B model's initialization takes seconds on a GPU and minutes on the CPU."""
    fields = dict(fields)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model


def word_tokenizer():
    """A word-level tokenizer built here (nothing to download): model directories need one to load, and
    prompt tuning initializes its virtual tokens from the embeddings of its init text's words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocabulary = {token: index for index, token in enumerate(SPECIAL + WORDS)}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def save_model_dir(fields: dict, directory: Path, dtype: torch.dtype, device: torch.device) -> Path:
    """A model directory as peftcode.models.prepare_model.prepare_model writes one for a built model: weights,
    config, tokenizer and manifest, which load_checkpoint, quantize_model and the methods read."""
    model = build_model(fields, dtype, device)
    model.save_pretrained(directory)
    word_tokenizer().save_pretrained(directory)
    manifest = {"source": {"build": fields}, "family": "causal", "pretrained": False}
    manifest.update(trust_remote_code=False, weights="local", hub=None, model_type=fields["model_type"])
    write_manifest(directory, {**manifest, "parameters": sum(p.numel() for p in model.parameters())})
    del model
    release()
    return directory


def random_examples(count: int, prompt: int, target: int, vocab: int, seed: int) -> list[dict]:
    """Training examples in encode_example's layout, at exactly ``prompt`` + ``target`` tokens: the batch
    the memory plan estimates (the configured maxima)."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(count):
        ids = torch.randint(FIRST_ID, vocab, (prompt + target,), generator=generator).tolist()
        examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return examples


def random_prompts(
    count: int, longest: int, vocab: int, seed: int, shortest: int | None = None
) -> list[list[int]]:
    """Prompts of random ids, of lengths from ``shortest`` (half of ``longest`` by default) to ``longest``."""
    generator = torch.Generator().manual_seed(seed)
    shortest = shortest or max(longest // 2, 1)
    lengths = torch.randint(shortest, longest + 1, (count,), generator=generator).tolist()
    return [torch.randint(FIRST_ID, vocab, (n,), generator=generator).tolist() for n in lengths]


def left_padded(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def search_problem() -> str | None:
    """Why peftcode's own search cannot run with this transformers, or None: it hands models their cache
    as ``cache``, the name transformers gives it from 5.24 on (5.23 and earlier take ``past_key_values``
    and silently ignore ``cache``, so the search would read an empty cache)."""
    import inspect

    import transformers
    from transformers import LlamaForCausalLM

    if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters:
        return None
    return (
        f"transformers {transformers.__version__} takes a model's cache as past_key_values, and peftcode's "
        "search passes cache= (transformers 5.24 on): bring transformers' wheel in .whl/ "
        "(benchmarks/README.md)"
    )


def release() -> None:
    """Free what the last row held, so that the next row's peak is its own."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cuda_context_mb() -> float:
    """What the GPU holds for this process outside PyTorch's allocator (CUDA's context, its kernels'
    modules): the memory plan's runtime part counts it, the allocator's peaks do not."""
    free, total = torch.cuda.mem_get_info()
    return (total - free - torch.cuda.memory_reserved()) / 2**20


class Peak:
    """The peak memory of a block: the CUDA allocator's (allocated, reserved), or on the CPU the growth of
    the process's resident high-water mark, reset at the start (Linux's clear_refs) where the kernel
    lets it."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.allocated_mb = self.reserved_mb = self.rss_mb = self.baseline = None

    def __enter__(self) -> Peak:
        release()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.baseline = _status_mb("VmRSS")
        except OSError:
            pass
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.allocated_mb = torch.cuda.max_memory_allocated() / 2**20
            self.reserved_mb = torch.cuda.max_memory_reserved() / 2**20
        elif self.baseline is not None:
            self.rss_mb = _status_mb("VmHWM") - self.baseline


class Deadline:
    """The run's time budget: rows that would start after it report that they were skipped."""

    def __init__(self, seconds: float | None):
        self.ends = None if seconds is None else time.monotonic() + seconds

    def passed(self) -> bool:
        return self.ends is not None and time.monotonic() > self.ends


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells) -> None:
        self.rows.append([cell_text(cell) for cell in cells])

    def fail(self, label: str, error: BaseException) -> None:
        """A row saying what went wrong, the other columns empty: the section goes on."""
        where = traceback.extract_tb(error.__traceback__)[-1]
        message = f"error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        message += f" ({Path(where.filename).name}:{where.lineno})"
        self.add(label, message.replace("|", "/"), *[""] * (len(self.columns) - 2))

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + " --- |" * len(self.columns))
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines + ([""] + self.notes if self.notes else [])) + "\n"


def cell_text(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def run_row(table: Table, label: str, deadline: Deadline, work: Callable[[], None]) -> None:
    """One row's work, its failure reported in the table rather than ending the section."""
    if deadline.passed():
        table.add(label, "skipped: past the run's time budget", *[""] * (len(table.columns) - 2))
        return
    try:
        work()
    except Exception as error:  # noqa: BLE001 (each failure is reported in its row)
        table.fail(label, error)
    finally:
        release()
