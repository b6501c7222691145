# earmark bootstrap. `make demo` and `make test` work on a fresh clone.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install system-deps demo test lint bench clean vllm-env

install: $(STAMP)

# Reinstall only when the project definition changes (idempotent).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/earmark run --spec jobs/demo.yaml
	$(BIN)/python -c "import duckdb; print(duckdb.sql(\"select uri, status, round(duration_s,2) as dur, transcript from read_parquet('out/demo/*.parquet') order by uri\"))"

# vLLM's own environment (its own torch build, never in .venv): the MOSS parity test runs it
vllm-env:
	@bash scripts/vllm_env.sh .venv-vllm

# System tools the tests need (Chromium); installs them when it can, else says how.
system-deps:
	@bash scripts/system_deps.sh

test: install system-deps vllm-env
	$(BIN)/python -m pytest -x -q tests

# every module's fast tests, no servers and no Ray (under 3 minutes on 2 cores)
test-fast: install
	$(BIN)/python -m pytest -x -q -m "not slow" tests

lint: install
	$(BIN)/ruff check platform tests scripts && $(BIN)/ruff format --check platform tests scripts

clean:
	rm -rf out .pytest_cache
