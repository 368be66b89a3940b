"""The study grid: a validated config resolved into cells, and each job's settings.

One source of truth: config -> cells -> each job's typed settings (:mod:`peftcode.study.settings`), which the
rules take as their ``params`` (an inference's batch of prompts through the plan,
:mod:`peftcode.planning.plan`),
so a job's params hold exactly the settings that job depends on and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from peftcode.study.engines import resolve_engine, vllm_refusal
from peftcode.study.families import is_encoder_decoder
from peftcode.study.kinds import (  # noqa: F401
    ADAPTER_KIND,
    FULL_WEIGHT_KINDS,
    KINDS,
    PEFT_KINDS,
    PROMPTED_KINDS,
    QLORA_BITS,
    RETRIEVING_KINDS,
    TRAINED_KINDS,
)
from peftcode.study.peft_options import config_options, peft_type
from peftcode.study.settings import (
    DataSettings,
    EvalSettings,
    InferSettings,
    MethodSettings,
    ModelSettings,
    TrainSettings,
)
from peftcode.study.validation import ConfigError

# The training loop's settings a method may set over the config's ``training``.
TRAINING_LOOP_KEYS = ("lr", "epochs", "batch_size", "gradient_checkpointing")
# What a model's prepared checkpoint depends on.
WEIGHT_KEYS = ("source", "tokenizer", "family", "trust_remote_code", "pretrained")


def encoder_key(encoder: str) -> str:
    """A file name for a dense retriever's encoder (a hub id or a local directory)."""
    return encoder.strip("/").replace("/", "--")


def quantization_settings(method: dict) -> dict | None:
    """How a QLoRA method quantizes its base model, for training and inference alike; None otherwise."""
    bits = QLORA_BITS.get(method["kind"])
    if bits is None:
        return None
    if bits == 8:
        return {"bits": 8}
    keys = ("quant_type", "double_quant", "compute_dtype")
    return {"bits": 4, **{key: method[key] for key in keys}}


@dataclass(frozen=True, order=True)
class Cell:
    """One job chain of the study: a model, a variant (of a method: its shots, seed, training set) and a
    dataset."""

    model: str
    variant: str
    dataset: str


class Study:
    """The resolved grid of a validated config."""

    def __init__(self, config: dict, left_out: frozenset[Cell] = frozenset()):
        """``left_out``: cells that stay out of the grid (see :mod:`peftcode.planning.plan`: over the
        budget)."""
        self.config = config
        self.results = config.get("results", "results")
        self._variants: dict[str, dict] = {}
        cells: set[Cell] = set()
        for block in config["study"]:
            for method in block["methods"]:
                for dataset in block["datasets"]:
                    tested_on = config["datasets"][dataset].get("union", [dataset])
                    for variant, settings in self._method_variants(method, dataset).items():
                        self._variants[variant] = settings
                        cells.update(Cell(m, variant, d) for m in block["models"] for d in tested_on)
                    if self.config["methods"][method]["kind"] not in TRAINED_KINDS:
                        continue
                    # Trained here, also tested on other datasets' test sets: a variant that names the
                    # training set and shares its fine-tune.
                    for other in block.get("test_on", []):
                        variant = f"{method}-{dataset}"
                        self._variants.setdefault(variant, self._trained_elsewhere(method, dataset))
                        cells.update(Cell(m, variant, other) for m in block["models"])
        self.all_cells = sorted(cells)
        self.cells = [cell for cell in self.all_cells if cell not in left_out]
        self.left_out = sorted(left_out)

    def _trained_elsewhere(self, method: str, dataset: str) -> dict:
        """A trained method's variant tested on other datasets than ``dataset``, the one it trains on: a
        union's own fine-tune, or the method's fine-tune on that dataset."""
        union = "union" in self.config["datasets"][dataset]
        trained_as = f"{method}-{dataset}" if union else method
        return {
            "method": method,
            **self.config["methods"][method],
            "train_dataset": dataset,
            "trained_as": trained_as,
        }

    def _method_variants(self, method: str, dataset: str) -> dict[str, dict]:
        settings = self.config["methods"][method]
        if "union" in self.config["datasets"][dataset]:
            # One model trained on the union, a variant of its own: its cells are the members' test sets.
            if settings["kind"] not in TRAINED_KINDS:
                raise ConfigError(
                    f"config error at study: method '{method}' trains nothing, so it cannot train on the "
                    f"union '{dataset}'"
                )
            return {f"{method}-{dataset}": self._trained_elsewhere(method, dataset)}
        if settings["kind"] not in PROMPTED_KINDS:
            return {method: {"method": method, **settings}}
        if settings["kind"] in RETRIEVING_KINDS:
            return {
                f"{method}-{shots}shot": {
                    "method": method,
                    "kind": settings["kind"],
                    "shots": shots,
                    "retriever": settings["retriever"],
                    "encoder": settings.get("encoder"),
                }
                for shots in settings["shots"]
            }
        variants = {}
        for shots in settings["shots"]:
            for seed in settings["seeds"] if shots else settings["seeds"][:1]:
                name = f"{method}-{shots}shot" + (f"-seed{seed}" if shots else "")
                variants[name] = {"method": method, "kind": settings["kind"], "shots": shots, "seed": seed}
        return variants

    # --- lookups -----------------------------------------------------------------------------------
    def method_of(self, variant: str) -> str:
        """The ``methods`` entry a variant comes from."""
        return self._variants[variant]["method"]

    def kind(self, variant: str) -> str:
        return self._variants[variant]["kind"]

    def is_trained(self, variant: str) -> bool:
        return self.kind(variant) in TRAINED_KINDS

    def quantization(self, variant: str) -> dict | None:
        return quantization_settings(self._variants[variant])

    def adapter_source(self, variant: str) -> dict:
        """Where an evaluated adapter (kind ``adapter``) comes from: a hub id and revision, or a folder."""
        return dict(self._variants[variant]["source"])

    def local_adapter_files(self, variant: str) -> list[str]:
        """A local adapter's files, so that replacing it reruns its cells; none for a hub adapter."""
        folder = self.adapter_source(variant).get("path")
        return sorted(str(p) for p in Path(folder).glob("adapter_*")) if folder else []

    def precision(self, model: str, variant: str) -> str:
        """A cell's precision setting: the method's own, else the model's, else the study's (``auto`` is
        resolved by the job, on its device)."""
        return self._variants[variant].get(
            "precision", self.config["models"][model].get("precision", self.config["precision"])
        )

    def train_dataset(self, variant: str, dataset: str) -> str:
        """The dataset a cell's model was trained on: a union for joint training, the block's dataset for a
        cell tested on another (``test_on``), else its own."""
        return self._variants[variant].get("train_dataset", dataset)

    def trained_as(self, variant: str) -> str:
        """The variant of the fine-tune job a cell's model comes from."""
        return self._variants[variant].get("trained_as", variant)

    @property
    def unions(self) -> list[str]:
        return sorted(name for name, settings in self.config["datasets"].items() if "union" in settings)

    @property
    def trained_cells(self) -> list[Cell]:
        """The fine-tune jobs: one per trained cell, and one per union for joint training."""
        return sorted({self.fine_tune(c) for c in self.cells if self.is_trained(c.variant)})

    def fine_tune(self, cell: Cell) -> Cell:
        """The fine-tune job a trained cell's model comes from."""
        return Cell(cell.model, self.trained_as(cell.variant), self.train_dataset(cell.variant, cell.dataset))

    def published(self) -> dict[Cell, dict]:
        """The fine-tunes to publish (config ``publish``): each one's repository and the cells evaluated on
        it, whose metrics its card shows."""
        settings = self.config.get("publish")
        if not settings:
            return {}
        published = {}
        for index, named in enumerate(settings["cells"]):
            cell = Cell(named["model"], named["variant"], named["dataset"])
            if cell not in self.cells or not self.is_trained(cell.variant):
                raise ConfigError(
                    f"config error at publish.cells[{index}]: {named} is no fine-tuned cell of the study"
                )
            tune = self.fine_tune(cell)
            evaluated = [c for c in self.cells if self.is_trained(c.variant) and self.fine_tune(c) == tune]
            repo = f"{settings['namespace']}/{tune.model}-{tune.variant}-{tune.dataset}"
            published[tune] = {"repo": repo, "private": settings["private"], "evaluated": evaluated}
        return published

    @property
    def models(self) -> list[str]:
        return sorted({cell.model for cell in self.cells})

    @property
    def datasets(self) -> list[str]:
        return sorted({cell.dataset for cell in self.cells})

    # --- per-job settings (the rules' params) -------------------------------------------------------
    def data_settings(self, dataset: str) -> DataSettings:
        return DataSettings.of(self.config["datasets"][dataset], f"datasets.{dataset}")

    def model_settings(self, model: str) -> ModelSettings:
        return ModelSettings.of(self.config["models"][model], f"models.{model}")

    def method_settings(self, method: str) -> MethodSettings:
        """A ``methods`` entry (``method`` names the entry, not a variant)."""
        return MethodSettings.of(self.config["methods"][method], f"methods.{method}")

    def encoder_named(self, key: str) -> str:
        """The dense encoder whose file name is ``key`` (see :func:`encoder_key`)."""
        encoders = {s["encoder"] for s in self.config["methods"].values() if s.get("retriever") == "dense"}
        return next(encoder for encoder in encoders if encoder_key(encoder) == key)

    def prepared_as(self, model: str) -> str:
        """The model whose prepared checkpoint ``model`` uses: the first with the same weights (models that
        differ only in how they are prompted, their precision or their size label share one)."""
        weights = {key: value for key, value in self.config["models"][model].items() if key in WEIGHT_KEYS}
        return next(
            name
            for name, settings in self.config["models"].items()
            if {key: value for key, value in settings.items() if key in WEIGHT_KEYS} == weights
        )

    def train_settings(self, model: str, variant: str, dataset: str) -> TrainSettings:
        """All a fine-tune depends on: method hyperparameters over training defaults, lengths, model."""
        if not self.is_trained(variant):
            raise KeyError(f"variant '{variant}' is not trained")
        named, data, model_entry = (
            self._variants[variant],
            self.data_settings(dataset),
            self.model_settings(model),
        )
        loop = {key: value for key, value in named.items() if key in TRAINING_LOOP_KEYS}
        return TrainSettings(
            method=named["method"],
            method_settings=self.method_settings(named["method"]),
            train_dataset=named.get("train_dataset"),
            trained_as=named.get("trained_as"),
            **{**self.config["training"], **loop},
            precision=self.precision(model, variant),
            quantization=self.quantization(variant),
            family=model_entry.family,
            prompt=model_entry.prompt,
            target_modules=model_entry.target_modules,
            max_input_length=data.max_input_length,
            max_target_length=data.max_target_length,
        )

    def configured_infer_settings(self, model: str, variant: str, dataset: str) -> InferSettings:
        """An inference's settings with the config's batch of prompts; a job's come from the plan
        (:meth:`peftcode.planning.plan.Plan.infer_settings`), whose batch fits the budget."""
        data, named, model_entry = (
            self.data_settings(dataset),
            self._variants[variant],
            self.model_settings(model),
        )
        generation = {**self.config["generation"], **data.generation}
        study_engine = generation.pop("engine")
        requested = self.method_settings(named["method"]).engine or study_engine
        return InferSettings(
            method=named["method"],
            engine=resolve_engine(
                requested,
                self.vllm_refusal(model, variant),
                self.config["resources"]["gpu"] > 0,
                generation["num_beams"],
            ),
            kind=named["kind"],
            quantization=self.quantization(variant),
            precision=self.precision(model, variant),
            shots=named.get("shots", 0),
            seed=named.get("seed", self.config["training"]["seed"]),
            retriever=named.get("retriever"),
            encoder=named.get("encoder"),
            prompt=model_entry.prompt,
            sampling=data.sampling,
            family=model_entry.family,
            max_input_length=data.max_input_length,
            max_new_tokens=data.max_target_length,
            stop=data.stop,
            **generation,
        )

    def vllm_refusal(self, model: str, variant: str) -> str | None:
        """Why vLLM cannot decode a cell's generations as ours does (None where it can)."""
        kind = KINDS[self.kind(variant)]
        method = self.method_settings(self._variants[variant]["method"])
        return vllm_refusal(
            is_encoder_decoder(self.model_settings(model).family),
            kind.soft_prompt,
            kind.bits,
            peft_type(method),
            kind.fetched,
        )

    def local_model_files(self, model: str) -> list[str]:
        """A local model directory's config and weights, so that replacing them reruns the model's chain."""
        folder = self.config["models"][model]["source"].get("path")
        if not folder:
            return []
        names = ("config.json", "*.safetensors", "*.bin", "*.index.json")
        return sorted(str(p) for name in names for p in Path(folder).glob(name))

    def local_data_files(self, dataset: str) -> list[str]:
        """The files a local dataset reads, so that editing one re-runs its chain; none for a hub dataset."""
        settings = self.config["datasets"][dataset]
        if "path" not in settings.get("source", {}):
            return []
        folder = Path(settings["source"]["path"])
        return [str(folder / f"{split}.{settings['format']}") for split in settings["splits"].values()]

    def gpu_request(self) -> dict:
        """The GPU resources of a fine-tune, quantize or inference job, as the SLURM plugin reads them."""
        request = {"gpu": self.config["resources"]["gpu"]}
        if "gpu_model" in self.config["resources"]:
            request["gpu_model"] = self.config["resources"]["gpu_model"]
        return request

    def eval_settings(self) -> EvalSettings:
        return EvalSettings.of(self.config["evaluation"], "evaluation")

    def cell_info(self, cell: Cell) -> dict:
        """The descriptive columns of a cell's row in the results table."""
        variant = self._variants[cell.variant]
        method = self.method_settings(variant["method"])
        return {
            "model": cell.model,
            "variant": cell.variant,
            "method": variant["method"],
            "kind": variant["kind"],
            "shots": variant.get("shots"),
            "seed": variant.get("seed"),
            "dataset": cell.dataset,
            "train_dataset": variant.get("train_dataset"),
            # Trained on a union of datasets (RQ3), rather than tested on another dataset than its own.
            "joint": "union" in self.config["datasets"].get(variant.get("train_dataset") or "", {}),
            "pretrained": self.config["models"][cell.model]["pretrained"],
            "prompt": self.config["models"][cell.model]["prompt"],
            "retriever": variant.get("retriever"),
            "size_b": self.config["models"][cell.model]["size_b"],
            "primary_metric": self.primary_metric(cell.dataset),
            # What an adapter is, beside its kind: LoRA's and QLoRA's shared options pair them in RQ4.
            "adapter_options": json.dumps(config_options(method), sort_keys=True)
            if peft_type(method)
            else None,
        }

    def primary_metric(self, dataset: str) -> str:
        """What the reports judge a test set by: its setting, else pass@ the smallest k where it has tests
        and EM at the largest k where it has none."""
        settings, evaluation = self.config["datasets"][dataset], self.config["evaluation"]
        if "primary_metric" in settings:
            return settings["primary_metric"]
        if "sampling" in settings:
            return f"pass@{min(evaluation['pass_k'])}"
        return f"em@{max(evaluation['k'])}"
