"""Each job's settings, typed and frozen.

:class:`peftcode.study.config.Study` builds them from the validated config and the rules carry them as their
``params``; the jobs read them as attributes. The config entries' fields are the schema's keys (a test keeps
them equal), so a key misspelled anywhere is an error where the settings are built or read, never a silent
default. A rule's params hold them as plain data (:meth:`Settings.as_dict`), which Snakemake records and
compares to rerun a job whose settings changed (it passes over objects of other types); the job's script
reads them back (:meth:`Settings.from_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Self


@dataclass(frozen=True)
class Settings:
    @classmethod
    def of(cls, entry: Mapping[str, Any], where: str, **extra) -> Self:
        """Settings from a config entry (``where``, its place in the config) and what the study adds."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(entry) - names)
        if unknown:
            raise TypeError(f"{where}: {cls.__name__} has no field {unknown[0]!r}")
        return cls(**entry, **extra)

    def as_dict(self) -> dict:
        """The settings as plain data: a rule's params, a job's records (tracking, resume state)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Settings written as plain data (:meth:`as_dict`) read back."""
        return cls(**data)


@dataclass(frozen=True)
class ModelSettings(Settings):
    """A ``models`` entry: what ``prepare_model`` builds, and how its cells prompt and size it."""

    source: Mapping
    family: str
    tokenizer: Mapping | None = None
    precision: str | None = None
    prompt: str = "alpaca"
    trust_remote_code: bool = False
    pretrained: bool = True
    size_b: float = 0.1
    target_modules: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class DataSettings(Settings):
    """A ``datasets`` entry: where its rows come from and how its cells are decoded."""

    union: list | None = None
    source: Mapping = field(default_factory=dict)
    format: str = "jsonl"
    splits: Mapping = field(default_factory=dict)
    fields: Mapping = field(default_factory=dict)
    preset: str | None = None
    python_only: bool = False
    primary_metric: str | None = None
    sampling: Mapping | None = None
    generation: Mapping = field(default_factory=dict)
    max_input_length: int = 64
    max_target_length: int = 64
    stop: list | None = None
    examples: Mapping = field(default_factory=dict)
    limit: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSettings(Settings):
    """A ``methods`` entry: its kind and the options of that kind (the schema admits each kind's own)."""

    kind: str
    peft_type: str | None = None
    peft: Mapping = field(default_factory=dict)
    r: int | None = None
    alpha: float | None = None
    dropout: float | None = None
    num_virtual_tokens: int | None = None
    init_text: str | None = None
    quant_type: str | None = None
    double_quant: bool | None = None
    compute_dtype: str | None = None
    lr: float | None = None
    epochs: float | None = None
    batch_size: int | None = None
    gradient_checkpointing: bool | None = None
    precision: str | None = None
    source: Mapping | None = None
    shots: list | int | None = None
    seeds: list | None = None
    retriever: str | None = None
    encoder: str | None = None
    engine: str | None = None


@dataclass(frozen=True)
class TrainSettings(Settings):
    """All a fine-tune depends on: its method's options, the training loop's settings (the method's own over
    the config's ``training``), the model's and the dataset's."""

    method: str  # the ``methods`` entry's name
    method_settings: MethodSettings
    train_dataset: str | None
    trained_as: str | None
    epochs: float
    batch_size: int
    grad_accum_steps: int
    optimizer: str
    lr: float
    weight_decay: float
    warmup_ratio: float
    evals_per_epoch: int
    gradient_checkpointing: bool
    eval_batch_size: int
    max_grad_norm: float
    seed: int
    precision: str
    quantization: Mapping | None
    family: str
    prompt: str
    target_modules: Mapping
    max_input_length: int
    max_target_length: int

    @property
    def kind(self) -> str:
        return self.method_settings.kind

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainSettings:
        return cls(**{**data, "method_settings": MethodSettings(**data["method_settings"])})


@dataclass(frozen=True)
class InferSettings(Settings):
    """All an inference depends on: how a cell prompts (shots, retriever), decodes and stops; the batch of
    prompts is the plan's, the one that fits the budget."""

    method: str  # the ``methods`` entry's name
    engine: str  # what decodes the cell: ours or vllm (peftcode.study.engines)
    kind: str
    quantization: Mapping | None
    precision: str
    shots: int
    seed: int
    retriever: str | None
    encoder: str | None
    prompt: str
    sampling: Mapping | None
    family: str
    max_input_length: int
    max_new_tokens: int
    stop: list | None
    num_beams: int
    num_return_sequences: int
    batch_size: int
    early_stopping: bool


@dataclass(frozen=True)
class EvalSettings(Settings):
    """The config's ``evaluation``: the k of EM@k and pass@k, bootstrap sizes, the sandbox's limits."""

    k: list
    pass_k: list
    bootstrap_samples: int
    codebleu_bootstrap_samples: int
    execution: Mapping
