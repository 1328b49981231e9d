# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1

.PHONY: run test soak fuzz install install-test init clean bench dist dist-test

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

# The one-file binary dist/chatport (PyInstaller, chatport.spec), built in a venv of its own
# with the postgres and dist extras; `make dist-test` runs it with an empty environment.
DIST_VENV ?= .venv-dist
DIST_SOURCES := chatport.spec wsgi.py deploy/chatport_binary.py setup.cfg \
	$(shell find app plugins -type f -not -path '*/__pycache__/*' -not -name '*.pyc')

$(DIST_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python -m pip install -q --upgrade pip
	$(DIST_VENV)/bin/python -m pip install -q -e '.[postgres,dist]'
	touch $@

dist/chatport: $(DIST_VENV)/.installed $(DIST_SOURCES)
	$(DIST_VENV)/bin/pyinstaller --noconfirm --clean --log-level WARN \
		--distpath dist --workpath build/pyinstaller chatport.spec

dist: dist/chatport

dist-test: dist install-test
	$(BIN)/python -m pytest -m dist -s $(PYTEST_ARGS) tests/test_dist.py

clean:
	rm -rf $(VENV) $(DIST_VENV) build dist *.egg-info
