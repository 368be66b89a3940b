"""Which engine decodes a cell: the registry's rules, and the study's settings that carry them."""

import pytest

from peftcode.study.config import Study
from peftcode.study.engines import resolve_engine, vllm_refusal
from peftcode.study.validation import validate_config


@pytest.mark.parametrize(
    ("requested", "on_gpu", "num_beams", "engine"),
    [
        ("ours", True, 1, "ours"),
        ("vllm", False, 10, "vllm"),  # asked for: its own beam search, on the CPU too
        ("auto", True, 1, "vllm"),  # greedy candidates on a GPU
        ("auto", True, 10, "ours"),  # EM@k's beam search stays ours
        ("auto", False, 1, "ours"),  # the CPU
    ],
)
def test_auto_picks_vllm_on_a_gpu_for_greedy_cells_only(requested, on_gpu, num_beams, engine):
    assert resolve_engine(requested, None, on_gpu, num_beams) == engine


def test_what_vllm_cannot_serve_stays_on_ours_with_its_reason():
    assert vllm_refusal(True, False, None, None, False) == "an encoder-decoder model"
    assert vllm_refusal(False, True, None, "PREFIX_TUNING", False) == "a soft prompt"
    assert "bitsandbytes" in vllm_refusal(False, False, 4, "LORA", False)
    assert "fetched" in vllm_refusal(False, False, None, None, True)
    assert "does not merge" in vllm_refusal(False, False, None, "POLY", False)
    for peft_type in (None, "LORA", "IA3", "LOHA"):
        assert vllm_refusal(False, False, None, peft_type, False) is None
    assert resolve_engine("vllm", "a soft prompt", True, 1) == "ours"


def test_a_methods_engine_overrides_the_datasets_and_the_studys(default_config):
    default_config["generation"]["engine"] = "auto"
    default_config["resources"] = {"gpu": 1}
    default_config["methods"]["lora"]["engine"] = "vllm"
    default_config["methods"]["prefix-tuning"]["engine"] = "vllm"
    study = Study(validate_config(default_config))

    def engine(variant: str, dataset: str) -> str:
        return study.configured_infer_settings("smollm2-135m", variant, dataset).engine

    assert engine("lora", "conala-style") == "vllm"  # the method's, beam search and all
    assert engine("full-ft", "conala-style") == "ours"  # auto: a 10-beam search
    assert engine("zero-shot-0shot", "humaneval") == "vllm"  # auto: greedy, on a GPU
    assert engine("prefix-tuning", "conala-style") == "ours"  # asked for, but vLLM cannot serve it
    assert engine("qlora-4bit", "conala-style") == "ours"


def test_an_untrained_methods_engine_is_its_own_on_the_cpu_too(default_config):
    """An ICL method asked to decode with vLLM: its cells are the base model's, which vLLM serves; the study's
    other cells keep ours."""
    default_config["methods"]["zero-shot"]["engine"] = "vllm"
    study = Study(validate_config(default_config))

    def engine(variant: str, dataset: str) -> str:
        return study.configured_infer_settings("smollm2-135m", variant, dataset).engine

    assert engine("zero-shot-0shot", "humaneval") == "vllm"
    assert engine("icl-0shot", "conala-style") == "ours"
