"""The engines that decode a cell's generations, in one registry: ``ours`` (our batched beam search and
sampler on transformers, :mod:`peftcode.inference.decoding`), ``vllm``
(:mod:`peftcode.inference.vllm_decoding`) and ``auto``, which picks per cell. A module without libraries,
read by the config's cells, the plan and the inference job.

vLLM serves the base model's prompts (zero-shot, in-context, retrieved), full fine-tunes, and adapters that
merge into the weights (LoRA as a LoRA request; the others, DoRA among them, through a merged checkpoint of
their own). The rest stays on ours, each for the reason :func:`vllm_refusal` gives.
"""

from peftcode.study.kinds import MERGEABLE_PEFT_TYPES

ENGINES = ("ours", "vllm", "auto")
DEFAULT_ENGINE = "ours"


def vllm_refusal(
    encoder_decoder: bool, soft_prompt: bool, bits: int | None, peft_type: str | None, fetched: bool
) -> str | None:
    """Why vLLM cannot decode a cell as ours does, or None where it can."""
    if encoder_decoder:
        return "an encoder-decoder model"
    if soft_prompt:
        # Prefix tuning's key/value prefix has no vLLM input; prompt tuning's virtual tokens would need its
        # prompt-embedding input, whose outputs are not checked against ours.
        return "a soft prompt"
    if bits:
        return "a bitsandbytes-quantized base (its QLoRA outputs are not checked against ours)"
    if fetched:
        return "an adapter fetched from elsewhere, whose type is known only once it is fetched"
    if peft_type is not None and peft_type not in MERGEABLE_PEFT_TYPES:
        return f"a {peft_type} adapter, which does not merge into the weights"
    return None


def resolve_engine(requested: str, refusal: str | None, on_gpu: bool, num_beams: int) -> str:
    """The engine that decodes a cell: ``vllm`` where asked for and it serves the cell; with ``auto``, vLLM
    on a GPU for a cell it serves whose candidates are greedy (``num_beams: 1``): its beam search ends beams
    at the end of text only, and its top candidates differ from ours (benchmarks/README.md), so EM@k's beam
    search stays on ours."""
    if refusal is not None or requested == "ours":
        return "ours"
    if requested == "vllm":
        return "vllm"
    return "vllm" if on_gpu and num_beams == 1 else "ours"
