"""The tiny study submitted through profiles/slurm to a real single-node SLURM cluster started here.

`.ci/run` installs Debian's slurm-wlm and munge; where they are missing, this module is skipped with the
reason in the summary (pytest runs with -rs).
"""

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import REPO, THREADS, prepared_tokenizer, read_yaml
from tests.slurm_cluster import SlurmCluster, missing_programs
from tests.study_runs import SNAKEMAKE, planned_jobs, write_study

# Three small studies on a SLURM cluster started for them; it starts the run (see conftest.py).
pytestmark = pytest.mark.slow(minutes=4, start=True)

PROFILE = REPO / "profiles" / "slurm"
GPU_RULES = {"quantize_model", "finetune", "infer"}
# The Snakefile's localrules, which run where snakemake runs (the downloads among them: compute nodes may
# have no network), and the target rule, which runs nothing.
LOCAL_RULES = {
    "prepare_model",
    "prepare_data",
    "join_data",
    "plan",
    "aggregate",
    "report",
    "partial_report",
    "all",
}

missing = missing_programs()
if missing:
    pytest.skip(
        f"SKIPPED THE SLURM INTEGRATION TEST: {', '.join(missing)} not installed "
        "(apt-get install slurm-wlm munge; .ci/run does)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    partition = read_yaml(PROFILE / "config.yaml")["default-resources"]["slurm_partition"]
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), partition)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def slurm_run(runs):
    """The tiny study's QLoRA cell, which has every kind of job (quantize_model among them); pass@k:
    model-written programs run in the sandbox inside a SLURM job."""
    return runs["study"]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def submitted_jobs(cluster) -> list[dict]:
    """Our jobs as the controller saw them, with the rule each ran (the plugin puts it in the comment)."""
    jobs = []
    for job in cluster.jobs():
        match = re.fullmatch(r"rule_(\w+?)(?:_wildcards_(.*))?", job.get("Comment", "").strip())
        if match:
            jobs.append({**job, "rule": match.group(1), "wildcards": match.group(2)})
    return sorted(jobs, key=lambda job: int(job["JobId"]))


def study_jobs(cluster) -> list[dict]:
    """The jobs of the QLoRA study, beside the others the cluster ran at the same time."""
    return [
        j for j in submitted_jobs(cluster) if {"mbpp-style", "qlora-4bit"} & set(j["wildcards"].split("_"))
    ]


def test_every_job_but_the_cheap_local_ones_ran_as_a_slurm_job(cluster, slurm_run):
    _, _, planned, output = slurm_run
    jobs = study_jobs(cluster)
    assert all(job["JobState"] == "COMPLETED" for job in jobs), [(j["rule"], j["JobState"]) for j in jobs]
    local = Counter(re.findall(r"^localrule (\w+):", output, re.M))
    assert set(local) == LOCAL_RULES & set(planned)
    assert Counter(job["rule"] for job in jobs) + local == Counter(planned)


def test_only_model_jobs_ask_for_a_gpu(cluster, slurm_run):
    jobs = submitted_jobs(cluster)  # every study's
    for job in jobs:
        wants_gpu = job.get("TresPerJob") == "gres:gpu:1"
        assert wants_gpu == (job["rule"] in GPU_RULES), (job["rule"], job.get("TresPerJob"))
    assert {job["rule"] for job in jobs} >= GPU_RULES | {"evaluate"}


def test_model_jobs_ask_for_the_memory_and_time_the_plan_estimates(cluster, slurm_run):
    config, _, _, _ = slurm_run
    from peftcode.planning.plan import Plan
    from peftcode.study.config import Study
    from peftcode.study.validation import validate_config

    plan = Plan(Study(validate_config(config)))
    checked = 0
    for job in study_jobs(cluster):
        if job["rule"] in ("finetune", "infer"):
            model, method, dataset = job["wildcards"].split("_")  # the plugin joins the values with "_"
            assert job["MinMemoryNode"] == f"{plan.mem_mb(job['rule'], model, method, dataset)}M"
            minutes = plan.runtime_min(job["rule"], model, method, dataset)
            assert job["TimeLimit"] == f"{minutes // 60:02d}:{minutes % 60:02d}:00"
            checked += 1
    assert checked == 2  # the fine-tune and the inference


def test_all_targets_exist_and_nothing_is_left_to_do(slurm_run):
    config, configfile, _, _ = slurm_run
    reports = REPO / config["results"] / "reports"
    assert all((reports / f"rq{n}.md").stat().st_size > 0 for n in range(1, 5))
    assert planned_jobs(configfile) == {}


def test_model_written_programs_ran_isolated_inside_a_slurm_job(slurm_run):
    config, _, _, _ = slurm_run
    metrics = read_json(
        REPO / config["results"] / "metrics" / "tiny-llama" / "qlora-4bit" / "mbpp-style.json"
    )
    assert metrics["sandbox"] == "kernel isolation"
    assert metrics["pass_samples"] == 2 and len(metrics["passes"]) == 3 and "pass@1" in metrics


def test_jobs_on_compute_nodes_read_the_hub_cache_only(slurm_run):
    config, _, _, _ = slurm_run
    logs = REPO / config["results"] / "logs"
    offline = "hub offline: this job reads the Hugging Face cache only"
    for job in ("finetune", "infer", "quantize_model"):
        (log,) = (logs / job).rglob("*.log")
        assert offline in log.read_text(), job
    (prepared,) = (logs / "prepare_data").rglob("*.log")  # where snakemake runs: it may download
    assert offline not in prepared.read_text()


def act_on_running_jobs(cluster, steps: dict[str, list[tuple]], timeout_s: float = 600) -> None:
    """For each dataset, its steps in order: ``(rule, ready, act)`` calls ``act(job id)`` on the running
    SLURM job of ``rule`` on the dataset once ``ready()`` (a file the job writes as it goes) says it got far
    enough. The datasets' steps are taken as their jobs get there, whichever first: their studies run side
    by side. A job that finished before its step could act on it fails the step at once."""
    steps = {dataset: list(queue) for dataset, queue in steps.items()}
    deadline = time.monotonic() + timeout_s
    while any(steps.values()):
        if time.monotonic() > deadline:
            left = {dataset: [rule for rule, *_ in queue] for dataset, queue in steps.items() if queue}
            raise AssertionError(f"no running job got far enough in {timeout_s} s: {left}")
        # ready() first: a file's existence costs nothing, the controller's job list a process.
        ready = [dataset for dataset, queue in steps.items() if queue and queue[0][1]()]
        jobs = submitted_jobs(cluster) if ready else []
        for dataset in ready:
            rule, _, act = steps[dataset][0]
            states = {
                j["JobId"]: j["JobState"] for j in jobs if j["rule"] == rule and dataset in j["wildcards"]
            }
            running = [job for job, state in states.items() if state == "RUNNING"]
            if running:
                act(running[0])
                steps[dataset].pop(0)
            elif "COMPLETED" in states.values():
                raise AssertionError(f"the {rule} job on {dataset} finished before the test could act on it")
        time.sleep(0.2)


def frozen(cluster, job: str) -> None:
    """Stops every process of a running job (SIGSTOP): its time runs on as a long job's does, without taking
    the CPU. At its time limit SLURM continues it (SIGCONT) before it sends SIGTERM, as slurmd does for every
    job it terminates (seen with Debian's slurm-wlm 22.05), so the job saves its state at the step it reached,
    its wall time over the limit included."""
    pids = cluster.job_processes(job)
    assert pids, f"no process of SLURM job {job} to freeze"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)


def submitted(cluster, configfile: Path, *args: str) -> subprocess.Popen:
    """A study submitted through the profile, running in the background."""
    return subprocess.Popen(
        [*SNAKEMAKE, "--configfile", str(configfile), "--profile", str(PROFILE),
         # This cluster keeps no accounts: jobs are looked up in the controller's memory. The plugin's first
         # status check is 1 s in, as is the next after one that found a job ended; each check that found
         # none waits 10 s longer (docs/gpu-and-clusters.md), whatever --seconds-between-status-checks says.
         "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1", *args],
        cwd=REPO, env={**os.environ, "SLURM_CONF": str(cluster.conf)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def tiny_study(folder: Path, resources: dict, method: str, dataset: str, model: Path) -> dict:
    config = prepared_tokenizer(read_yaml(REPO / "tests" / "tiny.yaml"), model)
    config["results"] = str(folder / "results")
    config["resources"] = resources
    config["study"] = [{"models": ["tiny-llama"], "methods": [method], "datasets": [dataset]}]
    return config


def lora_study(folder: Path, resources: dict, dataset: dict, epochs: int, model: Path) -> Path:
    """The tiny study's LoRA cell on a dataset of conala-style's rows named after ``folder``."""
    config = tiny_study(folder, resources, "lora", folder.name, model)
    config["datasets"] = {folder.name: {**config["datasets"]["conala-style"], **dataset}}
    config["methods"] = {"lora": {"kind": "lora", "lr": 1.0e-2, "epochs": epochs}}
    return write_study(config, folder)


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory, tiny_llama):
    """Three studies at once, a GPU each (their jobs take turns on the machine's cores):
    - "study": the tiny study's QLoRA cell (see ``slurm_run``);
    - "preempted": a fine-tune and an inference each stopped mid-run by SIGTERM, as SLURM's time limits and
      preemptions stop them (scancel --signal=TERM here), and retried by the profile; long enough to be
      stopped mid-run: many fine-tuning steps, and a test set of five chunks of examples;
    - "timed-out": a fine-tune given a time limit of one minute (no margin over a tiny estimate), up to its
      end. Once it has saved its first validation's state it is frozen (``frozen``), so that it outlives its
      limit as a long job would, without taking the CPU; SLURM enforces limits every 30 s, so it is stopped
      after 60 to 90 s, and its retry, given two minutes, resumes and finishes the few seconds left."""
    base = tmp_path_factory.mktemp("study")
    config = tiny_study(base, {"gpu": 1}, "qlora-4bit", "mbpp-style", tiny_llama)
    configfile = write_study(config, base)
    planned = planned_jobs(configfile)
    preempted, timed_out = tmp_path_factory.mktemp("preempted"), tmp_path_factory.mktemp("timed-out")
    long_test = {
        "splits": {"train": "train", "validation": "validation", "test": "train"},
        "limit": {"train": 287, "validation": 8, "test": 160},
    }
    short_limit = {"gpu": 1, "runtime_margin_min": 0, "throughput_tflops": 1000.0}
    few_tests = {"limit": {**long_test["limit"], "test": 4}}
    started = {
        "timed-out": submitted(
            cluster, lora_study(timed_out, short_limit, few_tests, 6, tiny_llama), "--until", "finetune"
        ),
        "preempted": submitted(cluster, lora_study(preempted, {"gpu": 1}, long_test, 6, tiny_llama)),
        "study": submitted(cluster, configfile),
    }  # fmt: skip

    def resume_state(folder: Path, job: str) -> Path:
        return folder / "results" / "resume" / job / "tiny-llama" / "lora" / folder.name

    def stopped(job: str) -> None:
        cluster.run("scancel", "--signal=TERM", job)

    def saved(folder: Path):
        return (resume_state(folder, "finetune") / "resume.pt").exists

    def decoded_a_chunk() -> bool:
        return any(resume_state(preempted, "infer").glob("candidates-*.json"))

    try:
        act_on_running_jobs(
            cluster,
            {
                preempted.name: [
                    ("finetune", saved(preempted), stopped),
                    ("infer", decoded_a_chunk, stopped),
                ],
                timed_out.name: [("finetune", saved(timed_out), lambda job: frozen(cluster, job))],
            },
        )
        outputs = {name: run.communicate(timeout=900)[0] for name, run in started.items()}
    finally:
        for run in started.values():
            run.kill()
    for name, run in started.items():
        assert run.returncode == 0, (name, outputs[name][-5000:])
    return {
        "study": (config, configfile, planned, outputs["study"]),
        "preempted": preempted,
        "timed-out": timed_out,
    }


def jobs_of(cluster, rule: str, folder: Path) -> list[dict]:
    return [j for j in submitted_jobs(cluster) if j["rule"] == rule and folder.name in j["wildcards"]]


def test_a_fine_tune_stopped_by_sigterm_resumes_from_the_step_it_reached(cluster, runs):
    folder = runs["preempted"]
    assert [j["JobState"] for j in jobs_of(cluster, "finetune", folder)] == ["FAILED", "COMPLETED"]
    tune = folder / "results" / "finetune" / "tiny-llama" / "lora" / folder.name
    record = read_json(tune / "cost.json")
    assert record["attempts"] == 2 and record["resumed_from_step"] > 0
    steps = list(pd.read_csv(tune / "train_log.csv")["step"])
    assert steps == list(range(record["steps"] + 1))  # no step repeated or missing


def test_an_inference_stopped_by_sigterm_resumes_and_generates_what_an_uninterrupted_run_does(
    cluster, runs, tmp_path
):
    from peftcode.inference.infer import infer
    from peftcode.planning.plan import Plan
    from peftcode.study.config import Study
    from peftcode.study.validation import validate_config

    folder = runs["preempted"]
    assert [j["JobState"] for j in jobs_of(cluster, "infer", folder)] == ["FAILED", "COMPLETED"]
    results, cell = folder / "results", ("tiny-llama", "lora", folder.name)
    generations = results / "generations" / "tiny-llama" / "lora" / f"{folder.name}.parquet"
    assert read_json(generations.with_suffix(".cost.json"))["resumed_examples"] >= 32
    settings = Plan(Study(validate_config(read_yaml(folder / "study.yaml")))).infer_settings(*cell)
    adapter = results / "finetune" / "tiny-llama" / "lora" / folder.name / "checkpoint"
    reference = infer(results / "models" / "tiny-llama", adapter, results / "data" / folder.name,
                      tmp_path / "g.parquet", tmp_path / "m.json", settings, threads=THREADS)  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_parquet(generations), reference)


def test_a_job_given_too_short_a_time_limit_finishes_on_its_retry_with_more(cluster, runs):
    folder = runs["timed-out"]
    tunes = jobs_of(cluster, "finetune", folder)
    states = [(j["JobState"], j.get("RunTime")) for j in tunes]
    assert tunes[0]["JobState"] == "TIMEOUT" and tunes[-1]["JobState"] == "COMPLETED", states
    assert [j["TimeLimit"] for j in tunes[:2]] == [
        "00:01:00",
        "00:02:00",
    ]  # the retry asks for twice the time
    assert tunes[0]["RunTime"] >= "00:01:00", states  # SLURM ran it up to its limit
    record = read_json(folder / "results" / "finetune" / "tiny-llama" / "lora" / folder.name / "cost.json")
    # The first attempt's time is counted (from the end of its start-up, which a busy machine makes long).
    earlier = record["total_wall_time_s"] - record["wall_time_s"]
    assert record["resumed_from_step"] and earlier > 0, (states, record)
