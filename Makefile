# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1

.PHONY: run test soak fuzz install install-test init clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

init: install
	$(BIN)/chatport init

run: init
	$(BIN)/chatport serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

# Test files run in PYTEST_JOBS processes (pytest-xdist), each file in one process so its
# module-scoped servers start once; PYTEST_JOBS=0 runs them in this process.
PYTEST_JOBS ?= 3
test: install-test
	$(BIN)/python -m pytest -n $(PYTEST_JOBS) --dist loadfile $(PYTEST_ARGS)

# The tests marked `soak` alone (left out of `make test`): two workers and 64 writers on SQLite
# for CHATPORT_TEST_WRITERS_SECONDS (default 60).
soak: install-test
	$(BIN)/python -m pytest -m soak $(PYTEST_ARGS)

# A longer schemathesis run than the one in `make test` (FUZZ_EXAMPLES per operation).
FUZZ_EXAMPLES ?= 200
fuzz: install-test
	$(BIN)/python -m tests.fuzz --max-examples $(FUZZ_EXAMPLES) $(FUZZ_ARGS)

# The gateway benchmark (needs `wrk`); see docs/benchmarks.md for the others.
BENCH_ARGS ?= --duration 3 --rounds 3 --streams 1000
bench: install
	$(BIN)/python -m bench.run_gateway $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
