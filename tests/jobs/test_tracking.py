"""Experiment tracking: each backend's run of a cell read back through the backend's own reader; a resumed
fine-tune continues its run; a backend that fails leaves the job running with a warning."""

import logging
import struct
import time
from types import SimpleNamespace

import pytest

from peftcode.jobs.tracking import cell_run

CELL = SimpleNamespace(model="tiny-llama", variant="lora", dataset="conala-style")
TRAIN_SETTINGS = {"lr": 1e-3, "lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]}, "seed": 42}
LOG = [{"step": s, "epoch": s / 4, "lr": 1e-3, "train_loss": 2 - s / 10, "val_loss": None} for s in range(5)]


def run_cell(tracking: dict, results, steps=LOG, fail_after: int | None = None) -> None:
    """A cell's three jobs as the workflow's scripts log them; a fine-tune that dies after ``fail_after``
    steps, like a preempted job, raises."""
    with cell_run(tracking, results, CELL, "finetune", TRAIN_SETTINGS, "code-a") as run:
        for row in steps:
            if fail_after is not None and row["step"] > fail_after:
                raise RuntimeError("preempted")
            run.log_step(row)
        run.log_record({"peak_rss_mb": 812.5, "precision": "fp32", "devices": ["cpu"]}, "finetune/")
        run.log_reference("checkpoint", results / "finetune" / "checkpoint")
    with cell_run(tracking, results, CELL, "infer", {"num_beams": 10}, "code-b") as run:
        run.log_record({"peak_rss_mb": 640.0, "tokens_per_s": 33.0}, "infer/")
    with cell_run(tracking, results, CELL, "evaluate", {"k": [1, 10]}, "code-c") as run:
        scores = {"em@1": 0.25, "em@10": 0.5, "codebleu": 0.31, "pass@1 (competition)": 0.5}
        run.log_record({**scores, "ranks": [0, -1], "model": "tiny"}, "")


def test_mlflow_keeps_a_cell_in_one_run_read_back_by_its_client(tmp_path):
    from mlflow import MlflowClient

    run_cell({"backend": "mlflow", "experiment": "study"}, tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("study").experiment_id])
    assert run.info.run_name == "tiny-llama/lora/conala-style" and run.info.status == "FINISHED"
    assert run.data.params["finetune.lr"] == "0.001" and run.data.params["finetune.lora.r"] == "8"
    assert run.data.params["finetune.lora.target_modules"] == '["q_proj", "v_proj"]'
    assert run.data.params["infer.num_beams"] == "10" and run.data.params["finetune/precision"] == "fp32"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(r["step"], r["train_loss"]) for r in LOG]
    assert run.data.metrics["em_at_1"] == 0.25 and run.data.metrics["codebleu"] == 0.31
    assert run.data.metrics["pass_at_1 competition"] == 0.5  # APPS' per-difficulty pass@k
    assert run.data.metrics["finetune/peak_rss_mb"] == 812.5 and run.data.metrics["infer/tokens_per_s"] == 33
    assert "ranks" not in run.data.params and "evaluate/ranks" not in run.data.params
    tags = run.data.tags
    assert (tags["model"], tags["variant"], tags["dataset"]) == ("tiny-llama", "lora", "conala-style")
    assert tags["peftcode.finetune_code"] == "code-a" and tags["peftcode.evaluate_code"] == "code-c"
    assert tags["peftcode.checkpoint"] == str((tmp_path / "finetune" / "checkpoint").resolve())
    assert "checkpoint.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_a_joint_adapters_run_is_tagged_with_the_cells_variant_and_logs_the_trained_method(tmp_path):
    from mlflow import MlflowClient

    joint = SimpleNamespace(model="tiny-llama", variant="lora-joint", dataset="joint")
    with cell_run(
        {"backend": "mlflow", "experiment": "study"},
        tmp_path,
        joint,
        "finetune",
        {"method": "lora"},
        "c",
    ):
        pass
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("study").experiment_id])
    assert run.info.run_name == "tiny-llama/lora-joint/joint"
    assert run.data.tags["variant"] == "lora-joint" and run.data.params["finetune.method"] == "lora"


def test_a_resumed_fine_tune_continues_its_run_and_a_rerun_starts_a_new_one(tmp_path):
    from mlflow import MlflowClient

    tracking = {"backend": "mlflow", "experiment": "study"}
    with pytest.raises(RuntimeError, match="preempted"):
        run_cell(tracking, tmp_path, fail_after=2)
    run_cell(tracking, tmp_path)  # the resumed job logs every row again, from step 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("study").experiment_id
    (run,) = client.search_runs([experiment])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0, 1, 2, 3, 4]
    # A finished cell rerun (its settings or code changed) is a new run; the old one stays.
    run_cell(tracking, tmp_path)
    runs = client.search_runs([experiment], order_by=["attributes.start_time DESC"])
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert len(client.get_metric_history(runs[0].info.run_id, "train_loss")) == len(LOG)


def test_a_tracking_server_that_is_down_costs_a_warning_not_the_job(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    run_cell({"backend": "mlflow", "experiment": "study", "uri": "http://127.0.0.1:9"}, tmp_path)
    assert time.monotonic() - started < 120
    warnings = [r.getMessage() for r in caplog.records if r.name == "peftcode.jobs.tracking"]
    # One warning per job: the first failure turns tracking off for the rest of it.
    assert len(warnings) == 3 and all("127.0.0.1:9" in w or "tracking" in w for w in warnings)


def test_tensorboard_writes_one_run_per_cell_read_back_by_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_cell({"backend": "tensorboard", "experiment": "study"}, tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard" / "tiny-llama" / "lora" / "conala-style"))
    events.Reload()
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("train_loss")] == [
        (r["step"], r["train_loss"]) for r in LOG
    ]
    assert events.Scalars("em_at_1")[0].value == 0.25
    assert {"finetune/settings/text_summary", "evaluate/tags/text_summary"} <= set(events.Tags()["tensors"])


def wandb_records(path):
    """The records of a W&B run file: LevelDB-log framing (7-byte header per chunk: CRC32, length, type)
    in 32 KiB blocks after the file's 7-byte header, each record a protobuf of wandb's own schema."""
    from wandb.proto import wandb_internal_pb2

    data, block, records, pending = path.read_bytes()[7:], 32768, [], b""
    offset = 0
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # a block's tail too short for a header is padding
            offset += block - offset % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        if length == 0 and kind == 0:
            break
        chunk = data[offset + 7 : offset + 7 + length]
        pending += chunk
        offset += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_runs_offline_in_one_run_per_cell_read_back_from_its_files(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    run_cell({"backend": "wandb", "experiment": "study"}, tmp_path)
    files = sorted((tmp_path / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 3 and len({f.name for f in files}) == 1  # three jobs, one run id
    history, config = [], {}
    for path in files:
        for record in wandb_records(path):
            if record.HasField("history"):
                history.append(
                    {".".join(item.nested_key) or item.key: item.value_json for item in record.history.item}
                )
            if record.HasField("config"):
                config.update({item.key: item.value_json for item in record.config.update})
    losses = [float(h["train_loss"]) for h in history if "train_loss" in h]
    assert losses == [r["train_loss"] for r in LOG]
    assert config["finetune.lr"] == '"0.001"' and config["infer.num_beams"] == '"10"'
