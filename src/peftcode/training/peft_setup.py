"""Fine-tuning methods as PEFT configs, built from a method's settings by its PEFT type's own config class
(:mod:`peftcode.study.peft_options`), and what a method needs of the training loop beyond the study's loss and
optimizer step. Target modules come from the config, or else from PEFT's own per-architecture defaults."""

from __future__ import annotations

import copy

import torch
from peft import (
    PeftConfig,
    PeftModel,
    PromptTuningInit,
    TaskType,
    get_peft_model,
    prepare_model_for_kbit_training,
)
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from transformers import PreTrainedModel

from peftcode.hardware.precision import cast_trainable_to_float32
from peftcode.models.checkpoints import weights_location
from peftcode.study.families import FAMILIES
from peftcode.study.kinds import KINDS
from peftcode.study.peft_options import config_options, peft_type
from peftcode.study.settings import TrainSettings


def peft_config(settings: TrainSettings, model_dir: str, total_steps: int | None = None) -> PeftConfig:
    """The PEFT config of a method's settings (a job's resolved ``train_settings``); ``total_steps`` is the
    fine-tune's, which AdaLoRA's rank schedule runs over unless the method sets its own."""
    name = peft_type(settings.method_settings)
    options = config_options(settings.method_settings, settings.target_modules)
    if KINDS[settings.kind].input_tokens:
        # Initialised from the embeddings of the init text's tokens, with the model's own tokenizer.
        location, tokenizer_options = weights_location(model_dir)
        options = {
            "prompt_tuning_init": PromptTuningInit.TEXT,
            "prompt_tuning_init_text": settings.method_settings.init_text,
            "tokenizer_name_or_path": location,
            "tokenizer_kwargs": tokenizer_options,
            **options,
        }
    if name == "ADALORA" and "total_step" not in options:
        options["total_step"] = total_steps
    return PEFT_TYPE_TO_CONFIG_MAPPING[name](
        task_type=TaskType(FAMILIES[settings.family].peft_task_type), **options
    )


# LoRA initialisations that move part of the base weights into the adapter (PiSSA, OLoRA): the adapter
# is saved converted to one over the original weights, as PEFT converts it.
BASE_REWRITING_INITS = ("pissa", "olora")


def rewrites_base(settings: TrainSettings) -> bool:
    init = settings.method_settings.peft.get("init_lora_weights")
    return isinstance(init, str) and init.startswith(BASE_REWRITING_INITS)


def adalora_regulariser(model: PeftModel) -> torch.Tensor | float:
    """AdaLoRA's orthogonal regulariser, weighted, as PEFT's AdaLoraModel adds it to a loss the model
    computes itself: the study computes its own loss (target tokens only), which takes the term here."""
    config = model.peft_config["default"]
    terms = []
    for name, parameter in model.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and parameter.requires_grad and parameter.numel():
            covariance = parameter @ parameter.T if "lora_A" in name else parameter.T @ parameter
            identity = torch.eye(*covariance.shape, device=covariance.device, dtype=covariance.dtype)
            terms.append(torch.norm(covariance - identity, p="fro"))
    return config.orth_reg_weight * torch.stack(terms).mean() if terms else 0.0


def loss_term(model) -> torch.Tensor | float:
    """What a method adds to the study's loss: AdaLoRA's regulariser; nothing for the others."""
    if isinstance(model, PeftModel) and model.peft_config["default"].peft_type.value == "ADALORA":
        return adalora_regulariser(model)
    return 0.0


def rank_allocation(model):
    """AdaLoRA's rank pattern as it stands (a copy), which the saved adapter is cut to; None for others."""
    if isinstance(model, PeftModel) and model.peft_config["default"].peft_type.value == "ADALORA":
        return copy.deepcopy(model.peft_config["default"].rank_pattern)
    return None


def restore_rank_allocation(model, allocation) -> None:
    """Set back the rank pattern of the kept state, so that the adapter saved is the one kept."""
    if allocation is not None:
        model.peft_config["default"].rank_pattern = allocation


def after_optimizer_step(model, step: int) -> None:
    """What a method does after each optimizer step, before the gradients are cleared: AdaLoRA allocates
    its rank budget from them."""
    if isinstance(model, PeftModel) and model.peft_config["default"].peft_type.value == "ADALORA":
        model.base_model.update_and_allocate(step)


def prepare_for_training(
    model: PreTrainedModel, settings: TrainSettings, model_dir: str, total_steps: int | None = None
) -> PreTrainedModel:
    """The model whose trainable parameters the method updates: all of them for full fine-tuning.

    A quantized base goes through PEFT's k-bit preparation (norms kept in fp32, input gradients on for
    checkpointing), which is where QLoRA's gradient checkpointing is turned on, as in the QLoRA recipe.
    """
    checkpointing = settings.gradient_checkpointing
    # Non-reentrant checkpointing needs no gradient on the (frozen) inputs to reach the adapters.
    checkpointing_kwargs = {"use_reentrant": False}
    if settings.quantization:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs=checkpointing_kwargs,
        )
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs)
    if KINDS[settings.kind].full_weights:
        return model
    model = get_peft_model(model, peft_config(settings, model_dir, total_steps))
    cast_trainable_to_float32(model)  # over frozen weights in a lower precision
    return model
