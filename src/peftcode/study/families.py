"""The model families the study knows, in one registry that everything else reads: the schema's enum (a test
keeps them equal), the model classes, PEFT's task type, the prompts' layout and the hub's pipeline tag. A
module with no imports, which the planner and the jobs read without loading transformers.

Adding a family is one entry here and its place in the schema's ``family`` enum.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    auto_class: str  # transformers' auto class of the family's models with their language-model head
    peft_auto_class: str  # PEFT's auto class of an adapter over such a model
    peft_task_type: str  # PEFT's TaskType of its adapters
    pipeline_tag: str  # the hub's pipeline tag of a fine-tune's model card
    # An encoder reads the prompt and a decoder writes the answer (labels apart from the input); else one
    # decoder continues the prompt.
    encoder_decoder: bool = False


FAMILIES = {
    family.name: family
    for family in (
        Family("causal", "AutoModelForCausalLM", "AutoPeftModelForCausalLM", "CAUSAL_LM", "text-generation"),
        Family(
            "seq2seq",
            "AutoModelForSeq2SeqLM",
            "AutoPeftModelForSeq2SeqLM",
            "SEQ_2_SEQ_LM",
            "text2text-generation",
            encoder_decoder=True,
        ),
    )
}


def is_encoder_decoder(family: str) -> bool:
    """Whether a family's models read the prompt with an encoder and write with a decoder."""
    return FAMILIES[family].encoder_decoder
