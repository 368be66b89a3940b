"""The plan: each cell's estimated peak memory (:mod:`peftcode.planning.estimates`, from the model's shape in
:mod:`peftcode.planning.shapes`) and compute, checked against the budget of the GPUs its jobs get before
anything
runs, and what each job asks of the scheduler. GPU-hours are the FLOPs over ``resources.throughput_tflops``.
"""

from __future__ import annotations

from dataclasses import replace

from peftcode.hardware.precision import resolved_name
from peftcode.planning.estimates import MIB, finetune_peak, inference_peak, per_gpu_peak, training_flops
from peftcode.planning.shapes import model_fields, shape_of_config
from peftcode.study.settings import InferSettings


class Plan:
    """Each cell's estimated peak memory and compute, against the budget of the GPUs its jobs get."""

    def __init__(self, study):
        config = study.config
        resources = config["resources"]
        self.study = study
        self.gpus = resources["gpu"]
        self.device = "cuda" if self.gpus > 0 else "cpu"
        memory = resources.get("gpu_memory_gb")
        # Each of a job's GPUs must hold its share: the budget is one GPU's memory, not their sum.
        self.budget_mb = memory * 1024 if memory and self.gpus else None
        self.memory_gb = memory
        self.throughput = resources.get("throughput_tflops") or (40.0 if self.gpus else 0.1)
        models = {model: study.model_settings(model) for model in sorted({c.model for c in study.all_cells})}
        self.shapes = {
            model: shape_of_config(model_fields(settings), settings.family)
            for model, settings in models.items()
        }
        self.rows = [self._estimate(cell) for cell in study.all_cells]

    def _examples(self, dataset: str, split: str) -> int | None:
        settings = self.study.data_settings(dataset)
        if settings.union:
            parts = [self._examples(member, split) for member in settings.union]
            return None if None in parts else sum(parts)
        limit = settings.limit.get(split)
        # Here, not at the top: the reader imports pandas, which a plan of hub datasets never needs.
        from peftcode.data.prepare_data import count_rows

        count = settings.examples.get(split) or count_rows(settings, split)
        if count is None:
            return limit
        return min(limit, count) if limit else count

    def _estimate(self, cell) -> dict:
        study, shape = self.study, self.shapes[cell.model]
        infer = study.configured_infer_settings(cell.model, cell.variant, cell.dataset)
        trusted = study.model_settings(cell.model).trust_remote_code
        precision = resolved_name(infer.precision, self.device)
        # Fewer prompts a batch where the configured batch's beams would not fit: batched beam search
        # returns the same candidates whatever the batch (tests/inference/test_infer.py).
        batch = infer.batch_size
        inference = inference_peak(shape, infer, self.device, precision, trusted)
        while self.budget_mb is not None and self._on_a_gpu(inference) > self.budget_mb and batch > 1:
            batch //= 2
            inference = inference_peak(
                shape, replace(infer, batch_size=batch), self.device, precision, trusted
            )
        row = {
            "model": cell.model,
            "variant": cell.variant,
            "dataset": cell.dataset,
            "precision": precision,
            "engine": infer.engine,
            "generation_batch": batch,
            "infer_peak_mb": round(inference["total"]),
            "infer_per_gpu_mb": round(self._on_a_gpu(inference)),
            "finetune_peak_mb": None,
            "finetune_per_gpu_mb": None,
            "trainable_params": 0,
            "train_tokens": None,
        }
        tests = self._examples(cell.dataset, "test")
        new_tokens = infer.max_new_tokens * (infer.sampling or {}).get("samples", infer.num_beams)
        flops = 2 * shape.params * tests * new_tokens if tests else None
        if study.is_trained(cell.variant):
            train_dataset = study.train_dataset(cell.variant, cell.dataset)
            train = study.train_settings(cell.model, cell.variant, train_dataset)
            try:
                peak = finetune_peak(shape, train, self.device, resolved_name(train.precision, self.device))
            except ValueError as error:  # PEFT cannot build the method on this model
                from peftcode.study.validation import ConfigError

                raise ConfigError(
                    f"config error at methods.{study.method_of(cell.variant)}: PEFT cannot build it on "
                    f"model '{cell.model}': {error}"
                ) from None
            examples = self._examples(train_dataset, "train")
            tokens = (
                examples * (train.max_input_length + train.max_target_length) * train.epochs
                if examples
                else None
            )
            row.update(
                finetune_peak_mb=round(peak["total"]),
                finetune_per_gpu_mb=round(self._on_a_gpu(peak)),
                trainable_params=peak["trainable_params"],
                train_tokens=tokens,
            )
            if flops is not None and tokens is not None:
                flops += training_flops(shape, train, tokens)
            elif tokens is None:
                flops = None
        needed = max(row["infer_per_gpu_mb"], row["finetune_per_gpu_mb"] or 0)
        row["fits"] = self.budget_mb is None or needed <= self.budget_mb
        row["budget_gb"] = self.memory_gb if self.budget_mb else None
        row["gpu_hours"] = None if flops is None else self._hours(flops)
        return row

    def _on_a_gpu(self, peak: dict) -> float:
        """The most one of a job's GPUs holds of its ``peak``."""
        return per_gpu_peak(peak, self.gpus)

    def _hours(self, flops: float) -> float:
        """GPU-hours (device-hours on the CPU): a model spread over several GPUs keeps all of them."""
        return flops / (self.throughput * 1e12) / 3600 * max(self.gpus, 1)

    # --- the budget -----------------------------------------------------------------------------------
    @property
    def over_budget(self) -> list[dict]:
        return [row for row in self.rows if not row["fits"]]

    def left_out(self, over_budget: str) -> frozenset:
        """The cells to leave out of the grid (``over_budget: skip``); stops at the first cell over the
        budget otherwise, with one line naming it and its estimate."""
        from peftcode.study.config import Cell
        from peftcode.study.validation import ConfigError

        rows = self.over_budget
        if rows and over_budget == "stop":
            row = rows[0]
            job, peak = max(
                ("fine-tune", row["finetune_per_gpu_mb"] or 0),
                ("inference", row["infer_per_gpu_mb"]),
                key=lambda j: j[1],
            )
            on = f"on each of its {self.gpus} GPUs" if self.gpus > 1 else "on its GPU"
            raise ConfigError(
                f"config error at resources.gpu_memory_gb: cell {row['model']} / {row['variant']} / "
                f"{row['dataset']} needs about {peak / 1024:.1f} GB {on} for its {job}, over the "
                f"{self.budget_mb / 1024:g} GB budget ({len(rows)} cells are); set over_budget: skip to "
                "leave such cells out"
            )
        return frozenset(Cell(row["model"], row["variant"], row["dataset"]) for row in rows)

    def summary(self) -> str:
        fitting = [row for row in self.rows if row["fits"]]
        hours = [row["gpu_hours"] for row in fitting]
        known = [h for h in hours if h is not None]
        unit = "GPU-hours" if self.gpus else "CPU-hours"
        if self.budget_mb:
            total, left_out = len(self.rows), len(self.rows) - len(fitting)
            cells = f"Memory plan at {self.memory_gb:g} GB per GPU: {len(fitting)} of {total} cells fit"
            cells += f", {left_out} left out"
        else:
            where = "GPUs" if self.gpus else "the CPU"
            cells = f"Memory plan (no GPU memory budget, jobs on {where}): {len(self.rows)} cells"
        text = (
            f"{cells}; about {sum(known):.1f} {unit} (fine-tuning and inference, an upper bound from the "
            "datasets' sizes and maximum lengths"
        )
        return text + (
            f"; {len(hours) - len(known)} cells of unknown size)" if len(known) < len(hours) else ")"
        )

    def infer_settings(self, model: str, variant: str, dataset: str) -> InferSettings:
        """An inference job's settings, with the batch of prompts that fits the budget."""
        batch = self._row(model, variant, dataset)["generation_batch"]
        return replace(self.study.configured_infer_settings(model, variant, dataset), batch_size=batch)

    # --- what jobs ask of the scheduler ------------------------------------------------------------------
    def _row(self, model: str, variant: str, dataset: str) -> dict:
        """The row of a cell, or of the first cell a fine-tune on a union trains for."""
        members = self.study.config["datasets"][dataset].get("union", [dataset])
        return next(
            r for r in self.rows if (r["model"], r["variant"], r["dataset"]) == (model, variant, members[0])
        )

    def mem_mb(self, job: str, model: str, variant: str | None = None, dataset: str | None = None) -> int:
        """Host memory for a job. A job on a GPU passes its weights through on their way (a shard at a time:
        at most 16 GB of them); on the CPU it holds its estimated peak, and its libraries' 2 GB. Preparing
        a model converts float32 weights (a hub model's are only downloaded)."""
        params = self.shapes[model].params
        if job == "prepare":
            # Hub models and local directories are used where they are; other sources are converted.
            kept = {"hub", "path"} & set(self.study.config["models"][model]["source"])
            return int(4096 + (0 if kept else 8 * params / MIB))
        if self.gpus or job == "quantize":
            return int(4096 + min(4 * params / MIB, 16 * 1024))
        row = self._row(model, variant, dataset)
        peak = row["finetune_peak_mb"] if job == "finetune" else row["infer_peak_mb"]
        return int(2048 + 1.25 * peak)

    def grown(self, value: int, attempt: int) -> int:
        """A job's memory or runtime at its ``attempt``: n times the first's, up to ``resources.retry_growth``
        times, so that a job killed for its limit is retried with a larger one."""
        return int(value * min(attempt, self.study.config["resources"]["retry_growth"]))

    def runtime_min(
        self, job: str, model: str, variant: str | None = None, dataset: str | None = None
    ) -> int:
        """Twice the estimated time and ``resources.runtime_margin_min``; four hours where the data's size is
        unknown."""
        if job == "quantize":
            return 60
        hours = self._row(model, variant, dataset)["gpu_hours"]
        margin = self.study.config["resources"]["runtime_margin_min"]
        return 240 if hours is None else max(1, int(margin + 2 * 60 * hours / max(self.gpus, 1)))


def write_plan(rows: list[dict], path) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)
