# Paths of every cell's targets, and the input functions that route a cell to its upstream jobs.
import re

from peftcode.config import PEFT_KINDS, Cell
from peftcode.versions import code_version


wildcard_constraints:
    model=r"[^/]+",
    method=r"[^/]+",
    dataset=r"[^/]+",


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing, for none)."""
    return "|".join(re.escape(name) for name in names) or r"(?!)"


def compute_resources(job):
    """What a job that runs a model asks of the scheduler: the config's GPUs, and memory and runtime that
    scale with the model's size."""
    return {
        **study.gpu_request(),
        "mem_mb": lambda w: study.job_memory_mb(w.model, job),
        "runtime": lambda w: study.job_runtime_min(w.model, job),
    }


def data_dir(dataset):
    return f"{R}/data/{dataset}"


def model_dir(model):
    return f"{R}/models/{model}"


def base_model_dir(model, method):
    """The base model a method trains and infers from: QLoRA's is quantized by a job of its own."""
    if study.quantization(method):
        return f"{R}/quantized/{model}/{method}"
    return model_dir(model)


def finetune_dir(model, method, dataset):
    return f"{R}/finetune/{model}/{method}/{dataset}"


def generations_path(model, method, dataset):
    return f"{R}/generations/{model}/{method}/{dataset}.parquet"


def metrics_path(model, method, dataset):
    return f"{R}/metrics/{model}/{method}/{dataset}.json"


def infer_inputs(w):
    """Full fine-tunes infer from their own checkpoint, PEFT methods from the base model plus adapter."""
    kind = study.kind(w.method)
    trained = f"{finetune_dir(w.model, w.method, study.train_dataset(w.method, w.dataset))}/checkpoint"
    inputs = {
        "model": trained if kind == "full-ft" else base_model_dir(w.model, w.method),
        "test": f"{data_dir(w.dataset)}/test.parquet",
        "train": f"{data_dir(w.dataset)}/train.parquet",
    }
    if kind in PEFT_KINDS:
        inputs["adapter"] = trained
    return inputs


def evaluate_inputs(w):
    inputs = {
        "generations": generations_path(w.model, w.method, w.dataset),
        "infer_memory": generations_path(w.model, w.method, w.dataset).replace(".parquet", ".memory.json"),
    }
    if study.is_trained(w.method):
        trained_on = study.train_dataset(w.method, w.dataset)
        inputs["finetune_memory"] = f"{finetune_dir(w.model, w.method, trained_on)}/memory.json"
    return inputs
