"""The kinds of method the study knows, in one registry that everything else reads: the schema's enum (a
test keeps them equal), the config's checks, the planner, the fine-tune and inference jobs, the rules and
the reports. A module with no imports, which the jobs, the planner and the reports read without loading
the config's validation (Snakemake, jsonschema). Adding a kind is one entry here and its schema block.

A kind of PEFT method names its PEFT type (its config class in PEFT); ``peft`` names any type PEFT exports,
given by the method's ``peft_type``. A method's ``peft`` options go to that class as they are.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str
    trains: bool = False  # a fine-tune job trains it
    full_weights: bool = False  # every weight trained, in float32 master copies; no adapter
    peft_type: str | None = None  # PEFT's type (None: full fine-tuning, prompted kinds, or the method's own)
    lora_like: bool = False  # LoRA's options: rank, alpha, dropout, attention targets
    bits: int | None = None  # the base model quantized by bitsandbytes (QLoRA)
    soft_prompt: bool = False  # virtual tokens or a key/value prefix that the model reads before the prompt
    input_tokens: bool = False  # the soft prompt is virtual tokens in the input (longer sequences)
    prompted: bool = False  # in-context examples, no training
    retrieves: bool = False  # the in-context examples are those nearest the test intent (a retriever's)
    fetched: bool = False  # an adapter trained elsewhere, fetched by its own job


KINDS = {
    kind.name: kind
    for kind in (
        Kind("full-ft", trains=True, full_weights=True),
        Kind("lora", trains=True, peft_type="LORA", lora_like=True),
        Kind("qlora-8bit", trains=True, peft_type="LORA", lora_like=True, bits=8),
        Kind("qlora-4bit", trains=True, peft_type="LORA", lora_like=True, bits=4),
        Kind("ia3", trains=True, peft_type="IA3"),
        Kind("prompt-tuning", trains=True, peft_type="PROMPT_TUNING", soft_prompt=True, input_tokens=True),
        Kind("prefix-tuning", trains=True, peft_type="PREFIX_TUNING", soft_prompt=True),
        Kind("peft", trains=True),
        Kind("icl", prompted=True),
        Kind("rag", prompted=True, retrieves=True),
        # An adapter trained elsewhere, evaluated over its base model (peftcode.models.adapters).
        Kind("adapter", fetched=True),
    )
}
QLORA_BITS = {name: kind.bits for name, kind in KINDS.items() if kind.bits}
SOFT_PROMPT_KINDS = tuple(name for name, kind in KINDS.items() if kind.soft_prompt)
LORA_KINDS = tuple(name for name, kind in KINDS.items() if kind.lora_like)
UNQUANTIZED_LORA_KINDS = tuple(name for name in LORA_KINDS if not KINDS[name].bits)
TRAINED_KINDS = tuple(name for name, kind in KINDS.items() if kind.trains)
PEFT_KINDS = tuple(name for name in TRAINED_KINDS if not KINDS[name].full_weights)
FULL_WEIGHT_KINDS = tuple(name for name, kind in KINDS.items() if kind.full_weights)
PROMPTED_KINDS = tuple(name for name, kind in KINDS.items() if kind.prompted)
RETRIEVING_KINDS = tuple(name for name, kind in KINDS.items() if kind.retrieves)
ADAPTER_KIND = next(name for name, kind in KINDS.items() if kind.fetched)

# PEFT types whose adapters inference merges into the base weights (the same function, without the
# adapters' extra products at every step); the others, soft prompts above all, stay apart.
MERGEABLE_PEFT_TYPES = ("LORA", "IA3", "ADALORA", "LOHA", "LOKR", "VERA", "OFT", "BOFT")
# PEFT types that need more than this study's data gives a fine-tune, refused before any job runs.
UNSUPPORTED_PEFT_TYPES = {
    "POLY": "it routes each example by a task id, which the study's data has none of",
    "MULTITASK_PROMPT_TUNING": "it needs a task id for each example",
    "XLORA": "it mixes adapters trained before it",
    "CPT": "it trains on its own template of in-context examples, with a loss of its own",
    "P_TUNING": "its prompt encoder re-enters at every decoding step of the study's search, as prompt "
    "tuning's does not; use prompt-tuning or prefix-tuning",
}
# LoRA initialisations that need a preprocessing pass over data that the fine-tune does not run.
UNSUPPORTED_LORA_INITS = {
    "corda": "it needs preprocess_corda over the training data first",
    "lora_ga": "it needs its gradient estimate over the training data first",
    "eva": "it needs initialize_lora_eva_weights over the training data first (without it, plain LoRA)",
}
