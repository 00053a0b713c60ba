# make trial   set up (once) and run one QLoRA trial on the embedded default, offline
# make test    set up (once) and run the test suite
# make sweep   set up (once) and run the default study (sweeps/lora_rank.yaml)
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: setup trial sweep test test-all
setup: $(VENV)/.setup-done

# torch==2.13.0 is pinned in pyproject.toml: this installs the CPU wheel; a loose pin pulls CUDA.
$(VENV)/.setup-done: pyproject.toml requirements-embedded.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,postgres,dashboard,slurm]'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-embedded.txt
	$(PY) -m harness.data fetch
	touch $@

trial: setup
	$(PY) -m harness

sweep: setup
	$(PY) -m harness sweep=lora_rank

test: setup
	$(PY) -m pytest

test-all: setup
	$(PY) -m pytest -m "not gpu"
