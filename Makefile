# make trial   set up (once) and run one QLoRA trial on the embedded default, offline
# make test    set up (once) and run the test suite
# make test-fast  the suite without the tests that start real processes (minutes; while editing)
# make sweep   set up (once) and run the default study (sweeps/lora_rank.yaml)
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: setup trial sweep test test-fast test-all
setup: $(VENV)/.setup-done

# pyproject.toml asks for a torch range; constraints-cpu.txt pins the CPU wheel here (unconstrained,
# pip resolves the newest torch with its CUDA wheels: GBs). On a GPU machine install your torch first,
# then `pip install -e '.[dev]'` without the constraints.
$(VENV)/.setup-done: pyproject.toml requirements-embedded.txt requirements-nodeps.txt constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints-cpu.txt -e '.[dev,postgres,dashboard,slurm]'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-embedded.txt -r requirements-nodeps.txt
	$(PY) -m harness.data fetch
	touch $@

trial: setup
	$(PY) -m harness

sweep: setup
	$(PY) -m harness sweep=lora_rank

# --timeout: a test that hangs (a process waiting on a socket) fails with its stacks printed, and the
# suite goes on, instead of holding CI until its limit. Not in pyproject: `-m slow` runs take longer.
# -n: pytest-xdist workers (one per core here), each test sent to the next free worker (--dist load), so two
# tests that start real processes can run at once (the fresh-clone checks pass so). TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist load)
test: setup
	$(PY) -m pytest --timeout=900 $(XDIST)

test-fast: setup
	$(PY) -m pytest --timeout=900 $(XDIST) -m "not slow and not gpu and not process"

test-all: setup
	$(PY) -m pytest -m "not gpu"
