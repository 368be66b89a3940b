# Paths of every cell's targets, and the input functions that route a cell to its upstream jobs.
import re
from pathlib import Path

from peftcode.study.config import ADAPTER_KIND, FULL_WEIGHT_KINDS, PEFT_KINDS, Cell, encoder_key
from peftcode.jobs.versions import code_version


wildcard_constraints:
    model=r"[^/]+",
    variant=r"[^/]+",
    dataset=r"[^/]+",


SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"


def job_code(module):
    """The version of a job's code: its entry module (named after its rule and its script), the peftcode
    modules that imports, and its script, by what they do (not by their files' dates: Snakemake's `code`
    trigger is left out, profiles/default)."""
    # A function of the job, not a value: a job's own snakemake process versions its rule alone.
    return lambda wildcards: code_version(module, script=SCRIPTS / f"{module.rsplit('.', 1)[-1]}.py")


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing, for none)."""
    return "|".join(re.escape(name) for name in names) or r"(?!)"


def compute_resources(job):
    """What a job that runs a model asks of the scheduler: the config's GPUs, and the memory and runtime
    the plan estimates for it, grown with each retry."""
    return {
        **study.gpu_request(),
        "mem_mb": lambda w, attempt: plan.grown(
            plan.mem_mb(job, w.model, w.get("variant"), w.get("dataset")), attempt
        ),
        "runtime": lambda w, attempt: plan.grown(
            plan.runtime_min(job, w.model, w.get("variant"), w.get("dataset")), attempt
        ),
    }


def data_dir(dataset):
    return f"{R}/data/{dataset}"


def model_dir(model):
    """Models that differ only in how they are prompted share one prepared checkpoint."""
    return f"{R}/models/{study.prepared_as(model)}"


def embeddings_path(dataset, encoder):
    return f"{R}/embeddings/{dataset}/{encoder_key(encoder)}.npz"


def base_model_dir(model, variant):
    """The base model a variant trains and infers from: QLoRA's is quantized by a job of its own."""
    if study.quantization(variant):
        return f"{R}/quantized/{model}/{variant}"
    return model_dir(model)


def adapter_dir(variant):
    """An evaluated adapter's manifest: where it lies, in the hub cache or a local folder."""
    return f"{R}/adapters/{variant}"


def finetune_dir(model, variant, dataset):
    return f"{R}/finetune/{model}/{variant}/{dataset}"


def generations_path(model, variant, dataset):
    return f"{R}/generations/{model}/{variant}/{dataset}.parquet"


def metrics_path(model, variant, dataset):
    return f"{R}/metrics/{model}/{variant}/{dataset}.json"


def trained_dir(w):
    """The fine-tune a cell's model comes from (shared by the cells tested on other datasets)."""
    trained_as = study.trained_as(w.variant)
    return finetune_dir(w.model, trained_as, study.train_dataset(w.variant, w.dataset))


def infer_inputs(w):
    """Full fine-tunes infer from their own checkpoint, PEFT methods from the base model plus adapter;
    in-context examples come from the training split."""
    kind = study.kind(w.variant)
    trained = f"{trained_dir(w)}/checkpoint"
    inputs = {
        "model": (
            trained if kind in FULL_WEIGHT_KINDS else base_model_dir(w.model, study.trained_as(w.variant))
        ),
        "test": f"{data_dir(w.dataset)}/test.parquet",
    }
    if kind == ADAPTER_KIND:
        inputs["adapter"] = adapter_dir(w.variant)
    settings = study.configured_infer_settings(w.model, w.variant, w.dataset)
    if settings.shots:
        inputs["train"] = f"{data_dir(w.dataset)}/train.parquet"
    if settings.retriever == "dense":
        inputs["embeddings"] = embeddings_path(w.dataset, settings.encoder)
    if kind in PEFT_KINDS:
        inputs["adapter"] = trained
    if settings.engine == "vllm":
        # Found once: rewriting it reruns nothing (a changed vLLM stops the inference, saying so).
        inputs["engine"] = ancient(f"{R}/engines/vllm.json")
    return inputs


def evaluate_inputs(w):
    inputs = {
        "generations": generations_path(w.model, w.variant, w.dataset),
        # Each example's prefix, which CodeBLEU leaves out.
        "test": f"{data_dir(w.dataset)}/test.parquet",
        "infer_cost": generations_path(w.model, w.variant, w.dataset).replace(".parquet", ".cost.json"),
    }
    if study.is_trained(w.variant):
        inputs["finetune_cost"] = f"{trained_dir(w)}/cost.json"
    return inputs


# The fine-tunes the config publishes to the hub (none by default), and the metrics their cards show.
PUBLISHED = study.published()


def published_metrics(w):
    evaluated = PUBLISHED[Cell(w.model, w.variant, w.dataset)]["evaluated"]
    return [metrics_path(c.model, c.variant, c.dataset) for c in evaluated]
