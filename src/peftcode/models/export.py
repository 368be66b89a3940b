"""Checkpoints that travel: every fine-tune's checkpoint is a Hugging Face artefact that loads from any folder
with plain ``transformers``/``peft`` (``AutoPeftModelForCausalLM.from_pretrained(folder)``).

- An adapter names its base as the hub does, by repository and resolved commit, where the base came from
  the hub; otherwise by its prepared folder's absolute path, with a checksum of its weights.
- The tokenizer, and the prompt the cell was trained with (the study's template, or the model's chat
  template, which the tokenizer carries), lie beside the weights.
- A model card (``huggingface_hub``'s card API) holds the metadata the hub reads (``base_model``,
  ``library_name``, ``datasets``, ``pipeline_tag``, ``tags``), the cell's settings, its training loss and
  memory, and how to prompt and generate with it.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from peftcode.data.prompts import INSTRUCTION, RESPONSE
from peftcode.models.checkpoints import read_manifest, weights_checksum
from peftcode.study.families import FAMILIES
from peftcode.study.kinds import KINDS, SOFT_PROMPT_KINDS
from peftcode.study.settings import TrainSettings

PROMPT_FILE = "peftcode_prompt.json"


def base_reference(base_dir: str | Path) -> dict:
    """How a checkpoint names its base: ``name`` (a hub repository or an absolute path), ``revision`` (the
    commit, for the hub) and ``sha256`` (of the weights, for a path)."""
    base_dir = Path(base_dir).resolve()
    manifest = read_manifest(base_dir)
    hub = manifest.get("hub")
    if hub and manifest.get("weights") == "hub":
        return {"name": hub["repo"], "revision": hub["commit"], "sha256": None}
    if manifest.get("weights") == "path":  # a local model directory, used where it is
        return {"name": manifest["path"], "revision": None, "sha256": manifest["sha256"]}
    return {"name": str(base_dir), "revision": None, "sha256": weights_checksum(base_dir)}


def prompt_description(style: str) -> dict:
    if style == "chat":
        return {"style": "chat", "how": "the tokenizer's chat template, the instruction as the user's turn"}
    return {"style": "alpaca", "template": f"{INSTRUCTION}{{intent}}{RESPONSE}"}


CARD = """---
{{ card_data }}
---

# {{ title }}

{{ description }}

## How to use

```python
{{ usage }}
```

Prompt: {{ prompt }}

## Training

{{ training }}
"""


def usage(kind: str, family: str) -> str:
    """Python that loads the checkpoint and generates with it greedily."""
    full = KINDS[kind].full_weights
    library = "transformers" if full else "peft"
    loader = FAMILIES[family].auto_class if full else FAMILIES[family].peft_auto_class
    # PEFT's generate() with soft prompts drops them after the first step where it carries a cache.
    cache = ", use_cache=False" if kind in SOFT_PROMPT_KINDS else ""
    return "\n".join(
        [
            f"from {library} import {loader}",
            "from transformers import AutoTokenizer",
            f'model = {loader}.from_pretrained("THIS_FOLDER")',
            'tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")',
            'inputs = tokenizer(prompt, return_tensors="pt")',
            f"output = model.generate(**inputs, max_new_tokens=128, do_sample=False{cache})",
        ]
    )


def make_portable(
    checkpoint: str | Path,
    base_dir: str | Path,
    tokenizer,
    settings: TrainSettings,
    record: dict,
    dataset: str,
) -> None:
    """Make a fine-tune's ``checkpoint`` folder (trained on ``dataset``) load from anywhere, and describe
    it (see the module)."""
    checkpoint = Path(checkpoint)
    base = base_reference(base_dir)
    adapter_config = checkpoint / "adapter_config.json"
    if adapter_config.exists():
        config = json.loads(adapter_config.read_text())
        config.update(base_model_name_or_path=base["name"], revision=base["revision"])
        adapter_config.write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(checkpoint)
    prompt = prompt_description(settings.prompt)
    (checkpoint / PROMPT_FILE).write_text(json.dumps({**prompt, "base": base}, indent=2))
    kind, family = settings.kind, settings.family
    data = ModelCardData(
        base_model=base["name"] if base["revision"] else None,
        library_name="transformers" if KINDS[kind].full_weights else "peft",
        pipeline_tag=FAMILIES[family].pipeline_tag,
        tags=["peftcode", "code-generation", kind],
        datasets=[dataset],
    )
    # The method's own options where it sets them, under what the fine-tune resolved.
    resolved = {**settings.method_settings.as_dict(), **settings.as_dict()}
    trained = {k: v for k, v in sorted(resolved.items()) if v is not None and not isinstance(v, dict | list)}
    pinned = f" at {base['revision']}" if base["revision"] else f" (sha256 {base['sha256']})"
    training = "\n".join(
        [
            f"- base: {base['name']}{pinned}",
            f"- best validation loss: {record.get('best_val_loss')}",
            f"- trainable parameters: {record.get('trainable_params')}",
            f"- peak memory (MB): {record.get('peak_rss_mb')}",
            f"- settings: `{json.dumps(trained)}`",
            f"- PEFT options: `{json.dumps(dict(settings.method_settings.peft), sort_keys=True)}`",
        ]
    )
    card = ModelCard.from_template(
        data,
        template_str=CARD,
        title=f"{settings.method} on {base['name'].rsplit('/', 1)[-1]}",
        description=f"A {kind} fine-tune from the peftcode study (Weyssow et al.'s PEFT study of code LLMs).",
        usage=usage(kind, family),
        prompt=json.dumps(prompt),
        training=training,
    )
    card.save(checkpoint / "README.md")
