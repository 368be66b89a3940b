"""A fine-tune or an inference stopped mid-run (SIGKILL, SIGTERM) continues on the next run from what it had
finished, not from the start, and ends as a run never stopped would; a finished one keeps what it saved
until the study's run ends."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from peftcode.inference.infer import infer
from peftcode.inference.resume_store import ResumeStore
from peftcode.jobs.preemption import FINISHED, remove_finished
from peftcode.training.finetune import finetune
from peftcode.training.progress import RESUME_FILE
from tests.helpers import decoding, tiny_workspace

# The job as Snakemake runs it, each step slowed so that the test can kill it mid-run.
SLOW_JOB = """
import pickle, sys, time
import peftcode.training.finetune as job
import peftcode.training.steps as steps
real_loss = steps.target_loss
def slow_loss(*args):
    time.sleep(0.3)
    return real_loss(*args)
steps.target_loss = slow_loss
model, data, out, resume, settings = sys.argv[1:]
settings = pickle.loads(bytes.fromhex(settings))
job.finetune(model, data, out + "/ckpt", out + "/log.csv", out + "/cost.json", settings,
             threads=1, resume_dir=resume)
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_llama):
    folder = tmp_path_factory.mktemp("resume")
    study = tiny_workspace(folder, {"train": 24, "validation": 4, "test": 2}, tiny_llama)
    # A validation, and so a saved state, after every step.
    settings = replace(
        study.train_settings("tiny-llama", "lora", "conala-style"), batch_size=2, evals_per_epoch=12
    )
    return folder, settings


def run(folder, out, settings, resume=None):
    paths = (out / "ckpt", out / "log.csv", out / "cost.json")
    return finetune(folder / "model", folder / "conala-style", *paths, settings, threads=1, resume_dir=resume)


@pytest.mark.slow(minutes=0.7)  # fine-tunes, one killed mid-run in a process of its own
def test_a_killed_finetune_resumes_from_its_last_step(workspace, tmp_path):
    folder, settings = workspace
    reference = run(folder, tmp_path / "reference", settings)
    reference_log = pd.read_csv(tmp_path / "reference" / "log.csv")

    resume, killed = tmp_path / "resume", tmp_path / "killed"
    killed.mkdir()
    arguments = [folder / "model", folder / "conala-style", killed, resume, pickle.dumps(settings).hex()]
    job = subprocess.Popen([sys.executable, "-c", SLOW_JOB, *map(str, arguments)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        state = resume / RESUME_FILE
        if state.is_file() and torch.load(state, weights_only=False)["step"] >= 4:
            break
        time.sleep(0.1)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    saved_step = torch.load(resume / RESUME_FILE, weights_only=False)["step"]
    assert 4 <= saved_step < reference["steps"]

    resumed = run(folder, tmp_path / "resumed", settings, resume)
    log = pd.read_csv(tmp_path / "resumed" / "log.csv")
    assert resumed["resumed_from_step"] == saved_step
    # What the cell cost counts both attempts (the killed one up to its last save).
    assert resumed["attempts"] == 2 and resumed["total_wall_time_s"] > resumed["wall_time_s"]
    assert reference["attempts"] == 1
    assert reference["total_wall_time_s"] == pytest.approx(reference["wall_time_s"], abs=0.5)
    # One row per step, and the same losses as the run that was never killed.
    assert list(log["step"]) == list(range(reference["steps"] + 1))
    pd.testing.assert_series_equal(log["train_loss"], reference_log["train_loss"], rtol=1e-5)
    pd.testing.assert_series_equal(log["val_loss"], reference_log["val_loss"], rtol=1e-5)
    assert resumed["best_val_loss"] == pytest.approx(reference["best_val_loss"], rel=1e-5)

    # The finished run keeps its last save, marked finished: SLURM marks a job that ends past its time limit
    # TIMEOUT although it finished, and the retry (its outputs deleted) resumes there, not at the start.
    assert (resume / FINISHED).is_file()
    last_save = torch.load(resume / RESUME_FILE, weights_only=False)["step"]
    retried = run(folder, tmp_path / "retried", settings, resume)
    assert retried["resumed_from_step"] == last_save and retried["attempts"] == 3
    assert retried["best_val_loss"] == pytest.approx(reference["best_val_loss"], rel=1e-5)
    assert list(pd.read_csv(tmp_path / "retried" / "log.csv")["step"]) == list(range(reference["steps"] + 1))
    # The study's run, once it succeeded, removes what finished jobs kept.
    assert remove_finished(tmp_path) == [resume] and not resume.exists()


def test_state_saved_under_other_settings_is_not_resumed(workspace, tmp_path):
    folder, settings = workspace
    # A state left by a killed run whose learning rate has since been edited.
    resume = tmp_path / "resume"
    resume.mkdir()
    other = replace(settings, lr=settings.lr * 2)
    torch.save({"settings": other.as_dict(), "step": 3}, resume / RESUME_FILE)
    record = run(folder, tmp_path / "second", settings, resume)
    assert record["resumed_from_step"] is None


@pytest.mark.slow(minutes=0.7)  # fine-tunes, one stopped by SIGTERM mid-run
def test_sigterm_saves_the_step_it_reached_and_the_retry_resumes_there(workspace, tmp_path):
    folder, settings = workspace
    settings = replace(settings, evals_per_epoch=2)  # validations, and so saves, at steps 6 and 12 only
    reference = run(folder, tmp_path / "reference", settings)
    reference_log = pd.read_csv(tmp_path / "reference" / "log.csv")

    resume, stopped = tmp_path / "resume", tmp_path / "stopped"
    stopped.mkdir()
    arguments = [folder / "model", folder / "conala-style", stopped, resume, pickle.dumps(settings).hex()]
    job = subprocess.Popen([sys.executable, "-c", SLOW_JOB, *map(str, arguments)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None and not (resume / RESUME_FILE).is_file():
        time.sleep(0.05)
    time.sleep(0.8)  # two or three steps past the validation at step 6, as a time limit would fall
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 1 and b"Preempted: SIGTERM at step" in stderr, stderr[-2000:]
    saved_step = torch.load(resume / RESUME_FILE, weights_only=False)["step"]
    assert 6 < saved_step < 12, "the state of the step it reached, not of the last validation"

    resumed = run(folder, tmp_path / "resumed", settings, resume)
    log = pd.read_csv(tmp_path / "resumed" / "log.csv")
    assert resumed["resumed_from_step"] == saved_step
    assert list(log["step"]) == list(range(reference["steps"] + 1))  # no step repeated or missing
    pd.testing.assert_series_equal(log["train_loss"], reference_log["train_loss"], rtol=1e-5)


# An inference as Snakemake runs it, each chunk of examples slowed so that the test can stop it mid-run.
SLOW_INFERENCE = """
import pickle, sys, time
import peftcode.inference.infer as job
real_generate = job.generate_candidates
def slow_generate(*args, **kwargs):
    time.sleep(1.5)
    return real_generate(*args, **kwargs)
job.generate_candidates = slow_generate
model, data, out, resume, settings = sys.argv[1:]
job.infer(model, None, data, out + "/generations.parquet", out + "/cost.json",
          pickle.loads(bytes.fromhex(settings)), threads=1, resume_dir=resume)
"""


@pytest.mark.slow(minutes=0.7)  # an inference slowed to be stopped mid-run
def test_a_stopped_inference_resumes_with_the_examples_it_had_not_finished(tmp_path, tiny_llama):
    folder = tmp_path / "workspace"
    tiny_workspace(folder, {"train": 8, "validation": 4, "test": 40}, tiny_llama)  # two chunks of examples
    data = folder / "conala-style"
    # Beam search and pass@k's draws, each from examples' own random streams.
    settings = decoding(
        max_input_length=48, max_new_tokens=6, stop="\n", num_beams=2, num_return_sequences=2, batch_size=8,
        sampling={"samples": 2, "temperature": 0.8, "top_p": 0.95},
    )  # fmt: skip

    def run(out: Path, resume: Path | None) -> pd.DataFrame:
        out.mkdir()
        infer(folder / "model", None, data, out / "g.parquet", out / "m.json", settings, 1, resume_dir=resume)
        return pd.read_parquet(out / "g.parquet")

    reference = run(tmp_path / "reference", None)
    resume, stopped = tmp_path / "resume", tmp_path / "stopped"
    stopped.mkdir()
    arguments = [folder / "model", data, stopped, resume, pickle.dumps(settings).hex()]
    job = subprocess.Popen([sys.executable, "-c", SLOW_INFERENCE, *map(str, arguments)])
    deadline = time.monotonic() + 120
    while (
        time.monotonic() < deadline
        and job.poll() is None
        and not (resume / f"candidates-{0:07d}.json").exists()
    ):
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)  # as scancel --signal=TERM, a time limit or a preemption
    job.wait(timeout=60)
    assert job.returncode == -signal.SIGTERM, "the job finished before it could be stopped"
    assert not (stopped / "generations.parquet").exists()
    assert sorted(p.name for p in resume.glob("candidates-*")) == [f"candidates-{0:07d}.json"]

    resumed = run(tmp_path / "resumed", resume)
    pd.testing.assert_frame_equal(resumed, reference)
    assert json.loads((tmp_path / "resumed" / "m.json").read_text())["resumed_examples"] == 32
    # Finished, its chunks are kept (marked finished) for a retry of a job marked TIMEOUT after it
    # finished: that retry generates nothing.
    assert (resume / FINISHED).is_file()
    pd.testing.assert_frame_equal(run(tmp_path / "retried", resume), reference)
    assert json.loads((tmp_path / "retried" / "m.json").read_text())["resumed_examples"] == 40
    assert remove_finished(tmp_path) == [resume] and not resume.exists()


def test_examples_finished_under_other_settings_or_inputs_are_generated_again(tmp_path):
    calls = []

    def generate(first: int, last: int) -> list[list[str]]:
        calls.append((first, last))
        return [[f"candidate {i}"] for i in range(first, last)]

    assert ResumeStore(tmp_path, {"seed": 1}).generated("candidates", 40, generate) == [
        [f"candidate {i}"] for i in range(40)
    ]
    calls.clear()
    ResumeStore(tmp_path, {"seed": 1}).generated("candidates", 40, generate)
    assert calls == []  # both chunks read back
    ResumeStore(tmp_path, {"seed": 2}).generated("candidates", 40, generate)
    assert calls == [(0, 32), (32, 40)]
