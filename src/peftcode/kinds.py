"""The kinds of method the study knows, in one place: a module with no imports, which the jobs, the
planner and the reports read without loading the config's validation (Snakemake, jsonschema)."""

QLORA_BITS = {"qlora-8bit": 8, "qlora-4bit": 4}
# Soft prompts: virtual tokens, or a prefix of keys and values, that the model reads before the prompt.
SOFT_PROMPT_KINDS = ("prompt-tuning", "prefix-tuning")
PEFT_KINDS = ("lora", *QLORA_BITS, "ia3", *SOFT_PROMPT_KINDS)
TRAINED_KINDS = ("full-ft", *PEFT_KINDS)
PROMPTED_KINDS = ("icl", "rag")
# An adapter trained elsewhere, evaluated over its base model (peftcode.adapters).
ADAPTER_KIND = "adapter"
