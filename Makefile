# `make test` and `make demo` each build .venv from scratch when it is missing.
# torch is installed first and pinned: torch==2.13.0 resolves to a local CPU wheel here, while an
# unpinned torch would pull several GB of CUDA packages.
# `make test` also needs a PostgreSQL server binary for the DuckLake tests (tests/postgres_server.py
# starts a throwaway server on a unix socket): Debian's `postgresql` package, installed when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.headdb-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: test demo install bench clean postgresql

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

test: $(STAMP) postgresql
	$(BIN)/python -m pytest -q

postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing PostgreSQL for the DuckLake tests: apt-get install -y postgresql"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; }

demo: $(STAMP)
	$(BIN)/headdb demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
