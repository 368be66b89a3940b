"""Experiment tracking: one run per cell in MLflow, TensorBoard or W&B, written beside the workflow's files.

A cell's jobs (fine-tune, inference, evaluation) log into one run, named and tagged by the cell's wildcards
``model/variant/dataset``: the fine-tune its settings, every training-log row as a step and its memory
record; the inference its settings and cost record; the evaluation the metrics. A cell tested on
another dataset than the one it was trained on (a joint adapter, a ``test_on`` cell) gets a run of its own
that names the checkpoint it loaded.

Tracking is a side channel. It never writes a target and the jobs' modules do not import it (their code
versions, which rerun jobs, do not depend on it), and a backend that fails, a server that is down or a
package that is missing, costs one warning in the job's log: the job goes on untracked and finishes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftcode.jobs.startup import imports_done

logger = logging.getLogger(__name__)

STAGES = ("finetune", "infer", "evaluate")


@dataclass(frozen=True)
class RunKey:
    """What names a cell's run: its wildcards, and the job that logs."""

    model: str
    variant: str
    dataset: str
    stage: str

    @property
    def name(self) -> str:
        return f"{self.model}/{self.variant}/{self.dataset}"


def metric_name(key: str) -> str:
    """MLflow's metric and param names allow letters, digits and ``_-. /:``: ``em@1`` becomes ``em_at_1``,
    APPS' ``pass@1 (competition)`` ``pass_at_1 competition``, any other character ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-. /:]", "_", key.replace("@", "_at_").replace("(", "").replace(")", ""))


def flat(settings: dict, prefix: str = "") -> dict[str, str]:
    """Nested settings as ``a.b`` params, values as text (a list or dict too long for a param stays JSON)."""
    params = {}
    for key, value in settings.items():
        name = f"{prefix}{metric_name(str(key))}"
        if isinstance(value, dict) and value:
            params.update(flat(value, f"{name}."))
        else:
            params[name] = value if isinstance(value, str) else json.dumps(value)
    return params


def numbers(record: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a record (booleans and missing values left out), under ``prefix``."""
    return {
        f"{prefix}{metric_name(key)}": float(value)
        for key, value in record.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class CellRun:
    """A job's handle on its cell's run. Every call is guarded: the first failure logs a warning and turns
    the handle off for the rest of the job, so that a server that is down costs one timeout, not one per
    step."""

    def __init__(self, backend: Backend | None, stage: str):
        self._backend = backend
        self._stage = stage

    def _call(self, what: str, *args) -> None:
        if self._backend is None:
            return
        try:
            getattr(self._backend, what)(*args)
        except Exception as error:  # noqa: BLE001 (any backend failure must leave the job running)
            logger.warning("experiment tracking failed (%s: %s); the job goes on without it", what, error)
            self._backend = None

    def log_step(self, row: dict) -> None:
        """One training-log row (its ``step`` the x-axis), as it is written."""
        self._call("log_metrics", numbers({k: v for k, v in row.items() if k != "step"}), int(row["step"]))

    def log_record(self, record: dict, metrics_prefix: str) -> None:
        """A job's end record (memory and cost, or the cell's metrics): its numbers as metrics, its names
        and flags as params under the stage's name (lists, such as per-example ranks, stay in the file)."""
        self._call("log_metrics", numbers(record, metrics_prefix), None)
        described = {k: v for k, v in record.items() if isinstance(v, str | bool)}
        self._call("log_params", flat(described, f"{self._stage}/"))

    def log_reference(self, name: str, path: str | Path) -> None:
        """Where a job's large output lies (a checkpoint), recorded by path rather than copied."""
        self._call("log_reference", name, str(Path(path).resolve()))

    def finish(self, failed: bool) -> None:
        self._call("finish", failed)


class Backend:
    """What a tracking backend does for a job; each is opened per job and finished when it ends."""

    def log_params(self, params: dict[str, str]) -> None:
        raise NotImplementedError

    def log_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        raise NotImplementedError

    def log_reference(self, name: str, path: str) -> None:
        raise NotImplementedError

    def finish(self, failed: bool) -> None:
        raise NotImplementedError


# --- MLflow ------------------------------------------------------------------------------------------------
class MlflowBackend(Backend):
    """A run found by the tag ``peftcode.cell``. A fine-tune starts a new run, unless an unfinished one of
    the same settings exists (a resumed job, which logs only the steps after the ones already there); an
    inference joins the cell's latest run unless that run already holds another inference's settings;
    the evaluation joins the latest run."""

    # Param and metric batches MLflow accepts in one request.
    BATCH = 100

    def __init__(self, tracking: dict, results: Path, key: RunKey, settings: dict, tags: dict[str, str]):
        from mlflow import MlflowClient

        store = results / "mlflow"
        uri = tracking.get("uri") or f"sqlite:///{(store / 'mlflow.db').resolve()}"
        self._lock_path = store / ".lock" if uri.startswith("sqlite:") else None
        if uri.startswith(("http://", "https://")):
            # Fail over in seconds, not the client's default minutes of retries, when the server is down.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        store.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._client = MlflowClient(uri)
            experiment = self._client.get_experiment_by_name(tracking["experiment"])
            experiment_id = (
                experiment.experiment_id
                if experiment
                else self._client.create_experiment(
                    tracking["experiment"], artifact_location=(store / "artifacts").resolve().as_uri()
                )
            )
            self._run_id, self._logged_steps = self._open(experiment_id, key, settings, tags)

    @contextmanager
    def _locked(self):
        """One writer at a time on a SQLite store: parallel jobs of one workflow share its file."""
        if self._lock_path is None:
            yield
            return
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _open(self, experiment_id: str, key: RunKey, settings: dict, tags: dict[str, str]) -> tuple[str, int]:
        digest = settings_digest(settings)
        runs = self._client.search_runs(
            [experiment_id],
            filter_string=f"tags.`peftcode.cell` = '{key.name}'",
            order_by=["attributes.start_time DESC"],
        )
        latest = runs[0] if runs else None
        stage_digest = f"peftcode.{key.stage}_settings"
        reusable = latest is not None and latest.data.tags.get(stage_digest) in (None, digest)
        if key.stage == "finetune":
            reusable = (
                reusable and latest.data.tags.get(stage_digest) == digest and latest.info.status != "FINISHED"
            )
        if reusable:
            history = self._client.get_metric_history(latest.info.run_id, "train_loss")
            run_id, logged = latest.info.run_id, max((m.step for m in history), default=-1)
            self._client.update_run(run_id, status="RUNNING")
        else:
            run_id = self._client.create_run(experiment_id, run_name=key.name).info.run_id
            logged = -1
        for name, value in {**tags, "peftcode.cell": key.name, stage_digest: digest}.items():
            self._client.set_tag(run_id, name, value)
        return run_id, logged

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        with self._locked():
            for start in range(0, len(items), self.BATCH):
                self._client.log_batch(self._run_id, params=items[start : start + self.BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        from mlflow.entities import Metric

        if step is not None and step <= self._logged_steps:
            return  # logged by the attempt this resumed job continues
        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step or 0) for k, v in metrics.items()]
        with self._locked():
            for start in range(0, len(items), self.BATCH):
                self._client.log_batch(self._run_id, metrics=items[start : start + self.BATCH])

    def log_reference(self, name: str, path: str) -> None:
        with self._locked():
            self._client.set_tag(self._run_id, f"peftcode.{name}", path)
            self._client.log_dict(self._run_id, {"path": path}, f"{name}.json")

    def finish(self, failed: bool) -> None:
        with self._locked():
            self._client.set_terminated(self._run_id, "FAILED" if failed else "FINISHED")


# --- TensorBoard -------------------------------------------------------------------------------------------
class TensorboardBackend(Backend):
    """A directory per cell (``<uri>/<model>/<variant>/<dataset>``), which TensorBoard shows as one run
    whatever number of jobs wrote event files into it; settings, tags and references as text."""

    def __init__(self, tracking: dict, results: Path, key: RunKey, settings: dict, tags: dict[str, str]):
        from tensorboardX import SummaryWriter  # torch's writer would put torch into every job's environment

        root = Path(tracking.get("uri") or results / "tensorboard")
        self._writer = SummaryWriter(log_dir=str(root / key.name), filename_suffix=f".{key.stage}")
        self._stage = key.stage
        self._writer.add_text(f"{key.stage}/tags", _markdown_table(tags))

    def log_params(self, params: dict[str, str]) -> None:
        self._writer.add_text(f"{self._stage}/settings", _markdown_table(params))

    def log_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, step or 0)

    def log_reference(self, name: str, path: str) -> None:
        self._writer.add_text(f"{self._stage}/{name}", path)

    def finish(self, failed: bool) -> None:
        if failed:
            self._writer.add_text(f"{self._stage}/status", "failed")
        self._writer.close()


def _markdown_table(values: dict) -> str:
    return "\n".join(["| key | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in sorted(values.items()))])


# --- Weights & Biases --------------------------------------------------------------------------------------
class WandbBackend(Backend):
    """One W&B run per cell, whose id is derived from the project and the cell, which each job resumes.
    Offline (files under ``<results>/wandb``, which ``wandb sync`` uploads) unless a W&B API key is set."""

    def __init__(self, tracking: dict, results: Path, key: RunKey, settings: dict, tags: dict[str, str]):
        import wandb

        mode = tracking.get("mode") or ("online" if wandb.login(prompt=False, verify=False) else "offline")
        directory = results / "wandb"
        directory.mkdir(parents=True, exist_ok=True)
        run_id = hashlib.sha256(f"{tracking['experiment']}/{key.name}".encode()).hexdigest()[:16]
        self._run = wandb.init(
            project=tracking["experiment"],
            entity=tracking.get("entity"),
            id=run_id,
            name=key.name,
            resume="allow",
            mode=mode,
            dir=str(directory),
            job_type=key.stage,
            tags=[tags["model"], tags["variant"], tags["dataset"]],
            config={f"peftcode.{k}": v for k, v in tags.items()},
            settings=wandb.Settings(silent=True, x_disable_stats=True),
        )

    def log_params(self, params: dict[str, str]) -> None:
        self._run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        if step is None:
            self._run.summary.update(metrics)
        else:
            self._run.log(metrics, step=step)

    def log_reference(self, name: str, path: str) -> None:
        self._run.config.update({f"peftcode.{name}": path}, allow_val_change=True)

    def finish(self, failed: bool) -> None:
        self._run.finish(exit_code=1 if failed else 0)


BACKENDS: dict[str, type[Backend]] = {
    "mlflow": MlflowBackend,
    "tensorboard": TensorboardBackend,
    "wandb": WandbBackend,
}


@contextmanager
def cell_run(
    tracking: dict | None,
    results: str | Path,
    wildcards: Any,
    stage: str,
    settings: dict,
    code: str,
):
    """The run of the job's cell, for the job's whole life; an inactive handle when tracking is off or
    its backend cannot start. The job's settings are logged as params under the stage's name."""
    if not tracking:
        yield CellRun(None, stage)
        return
    if stage not in STAGES:
        raise ValueError(f"tracking: unknown stage {stage!r}, expected one of {STAGES}")
    key = RunKey(wildcards.model, wildcards.variant, wildcards.dataset, stage)
    tags = {
        "model": key.model,
        "variant": key.variant,
        "dataset": key.dataset,
        "peftcode.stage": stage,
        f"peftcode.{stage}_code": code,
    }
    try:
        backend = BACKENDS[tracking["backend"]](tracking, Path(results), key, settings, tags)
    except Exception as error:  # noqa: BLE001 (tracking must never stop the job)
        logger.warning("experiment tracking with %s is off for this job: %s", tracking["backend"], error)
        backend = None
    run = CellRun(backend, stage)
    run._call("log_params", flat(settings, f"{stage}."))
    failed = True
    try:
        yield run
        failed = False
    finally:
        run.finish(failed)


def job_run(job: Any, stage: str):
    """``cell_run`` for a Snakemake job's script, from its ``snakemake`` object. The job's work begins
    here, its imports done (see peftcode.jobs.startup)."""
    imports_done()
    return cell_run(
        job.config.get("tracking"),
        job.config["results"],
        job.wildcards,
        stage,
        job.params.settings,
        job.params.code,
    )
