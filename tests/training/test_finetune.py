"""The training loss: computed on the target tokens only, exactly as the model's own loss."""

import pandas as pd
import pytest
import torch

from peftcode.data.prompts import collate
from peftcode.models.checkpoints import load_checkpoint
from peftcode.models.quantize_model import quantize_model
from peftcode.study.config import Study
from peftcode.study.validation import validate_config
from peftcode.training.peft_setup import prepare_for_training
from peftcode.training.steps import encode_split, target_loss
from tests.helpers import REPO, SCHEMA, read_yaml

EXAMPLES = pd.DataFrame(
    {
        "intent": ["sort list `l` in reverse order", "open file `f`", "reverse string `s` and join it"],
        "code": ["sorted(l, reverse=True)", "open(f)", "''.join(reversed(s))"],
    }
)


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    config = read_yaml(REPO / "tests" / "tiny.yaml")
    config["study"][0]["methods"] = list(config["methods"])
    return Study(validate_config(config, SCHEMA)), tiny_llama


@pytest.mark.parametrize("method", ["full-ft", "lora", "ia3", "prompt-tuning", "prefix-tuning", "qlora-4bit"])
def test_target_only_logits_give_the_models_own_loss_and_gradients(tiny, method, tmp_path):
    study, folder = tiny
    settings = study.train_settings("tiny-llama", method, "conala-style")
    torch.manual_seed(0)
    if settings.quantization:
        quantize_model(folder, tmp_path / "quantized", "causal", settings.quantization)
        folder = tmp_path / "quantized"
    model, tokenizer = load_checkpoint(folder, "causal")
    model = prepare_for_training(model, settings, str(folder))
    model.eval()  # no dropout, so both losses see the same function
    batch = collate(encode_split(EXAMPLES, tokenizer, settings), tokenizer.pad_token_id)
    ours = target_loss(model, batch, "causal")
    ours.backward()
    our_grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    theirs = model(**batch).loss
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    their_grads = [p.grad for p in model.parameters() if p.requires_grad]
    for mine, reference in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-6)
