"""Fine-tuning methods as PEFT configs. Target modules come from the config, or else from PEFT's own
per-architecture defaults (attention projections for LoRA; attention and feed-forward for IA3)."""

from __future__ import annotations

from peft import (
    IA3Config,
    LoraConfig,
    PeftConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    PromptTuningInit,
    TaskType,
    get_peft_model,
    prepare_model_for_kbit_training,
)
from transformers import PreTrainedModel

from peftcode.models import weights_location
from peftcode.precision import cast_trainable_to_float32

TASK_TYPES = {"causal": TaskType.CAUSAL_LM, "seq2seq": TaskType.SEQ_2_SEQ_LM}


def peft_config(settings: dict, model_dir: str) -> PeftConfig:
    """The PEFT config of a method's settings (a job's resolved ``train_settings``)."""
    kind, task_type = settings["kind"], TASK_TYPES[settings["family"]]
    targets = settings.get("target_modules", {})
    if kind in ("lora", "qlora-8bit", "qlora-4bit"):
        return LoraConfig(
            task_type=task_type,
            r=settings["r"],
            lora_alpha=settings["alpha"],
            lora_dropout=settings["dropout"],
            target_modules=targets.get("attention"),
        )
    if kind == "ia3":
        feedforward = targets.get("feedforward")
        attention = targets.get("attention")
        return IA3Config(
            task_type=task_type,
            target_modules=(attention or []) + (feedforward or []) if attention or feedforward else None,
            feedforward_modules=feedforward,
        )
    if kind == "prompt-tuning":
        # Initialised from the embeddings of the init text's tokens, with the model's own tokenizer.
        location, options = weights_location(model_dir)
        return PromptTuningConfig(
            task_type=task_type,
            num_virtual_tokens=settings["num_virtual_tokens"],
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text=settings["init_text"],
            tokenizer_name_or_path=location,
            tokenizer_kwargs=options,
        )
    if kind == "prefix-tuning":
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=settings["num_virtual_tokens"])
    raise ValueError(f"method kind '{kind}' has no PEFT config")


def prepare_for_training(model: PreTrainedModel, settings: dict, model_dir: str) -> PreTrainedModel:
    """The model whose trainable parameters the method updates: all of them for full fine-tuning.

    A quantized base goes through PEFT's k-bit preparation (norms kept in fp32, input gradients on for
    checkpointing), which is where QLoRA's gradient checkpointing is turned on, as in the QLoRA recipe.
    """
    checkpointing = settings["gradient_checkpointing"]
    # Non-reentrant checkpointing needs no gradient on the (frozen) inputs to reach the adapters.
    checkpointing_kwargs = {"use_reentrant": False}
    if settings["quantization"]:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs=checkpointing_kwargs,
        )
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs)
    if settings["kind"] == "full-ft":
        return model
    model = get_peft_model(model, peft_config(settings, model_dir))
    cast_trainable_to_float32(model)  # over frozen weights in a lower precision
    return model
