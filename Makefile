# The two commands: `make demo` (a full local training run) and `make test`.
# Both create .venv on first use. torch==2.13.0 is installed before anything
# that depends on it so pip takes the CPU wheel instead of a multi-GB CUDA build.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench fuzz soak reliability lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip check
	@touch $(STAMP)

demo: venv
	$(BIN)/invoke demo

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
# Tests run on every core (pytest-xdist), a test file per worker; TEST_WORKERS=0 runs them in one process.
# Files start in the order tests/conftest.py sorts them (the longest first): --no-loadscope-reorder,
# or xdist re-sorts them by their count of tests and the long one-test files run last, alone.
TEST_WORKERS ?= auto
DIST := --dist loadfile --no-loadscope-reorder
test: venv
	@$(BIN)/python -m pytest -n $(TEST_WORKERS) $(DIST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: venv
	@$(MAKE) --no-print-directory test PYTEST_ARGS='-m "not slow"'

# make bench: every benchmark, BENCHMARKS.md rewritten (under 10 minutes on 2 cores).
# make bench QUICK=1: the smallest run of every path (under a minute; CI runs it).
bench: venv
	$(BIN)/python -m bench $(if $(filter-out 0,$(QUICK)),--quick) $(BENCH_ARGS)

# make fuzz: the property-based tests at full size (10,000+ examples in all; make test runs a smaller profile).
fuzz: venv
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -n $(TEST_WORKERS) -p no:cacheprovider tests/fuzz $(PYTEST_ARGS)

# make soak: the load tests' long profile (30 consecutive local runs, concurrent launches over 3 envs).
soak: venv
	RELIABILITY_PROFILE=long $(BIN)/python -m pytest -n $(TEST_WORKERS) -p no:cacheprovider tests/load $(PYTEST_ARGS)

# make reliability: every test that proves a RELIABILITY.md row, then RELIABILITY.md written from
# what they observed (PROFILE=long for the long profiles). Fails unless every row passed.
PROFILE ?= short
reliability: venv
	@$(BIN)/python -m reliability --clear
	-RELIABILITY_PROFILE=$(PROFILE) $(BIN)/python -m pytest -n $(TEST_WORKERS) $(DIST) -p no:cacheprovider -m row $(PYTEST_ARGS)
	$(BIN)/python -m reliability --check

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .local runs .pytest_cache
