# Everything a fresh clone needs: `make run` to search, `make test` to check.
PYTHON ?= python3
# VENV=path uses another virtual environment (one already installed: nothing is reinstalled if it is current).
VENV ?= .venv
BIN := $(VENV)/bin
# The exact CPU build of torch; an unpinned torch pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
# `make run PORT=8001 HOST=0.0.0.0`, or TAKES_PORT / TAKES_HOST from the environment.
HOST ?= $(or $(TAKES_HOST),127.0.0.1)
PORT ?= $(or $(TAKES_PORT),8000)
INDEX_DIR ?= $(CURDIR)/data/index
export TAKES_INDEX_DIR ?= $(INDEX_DIR)
export HF_HUB_OFFLINE := 1
# The shared dev judgments when present, else the copy shipped in the repo.
JUDGMENTS ?= $(firstword $(wildcard ../shared/eval/dev_queries.json) tests/data/dev_queries.json)
# pip prints what it fetches and a progress bar for each large download.
PIP_INSTALL := $(BIN)/python -m pip install --progress-bar on

.PHONY: run test install install-test index bench bench-postgres eval clean chromium int8-model

# Running needs no torch: the default model ships as an int8 ONNX file.
# The stamps depend on pyproject.toml, so a changed dependency list reinstalls.
$(VENV)/.installed: pyproject.toml
	@echo "== takes: installing what running needs into $(VENV) (no torch) =="
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e '.[mcp,bluesky]'
	touch $@

# The tests also compare the int8 model with torch fp32 and rebuild it: torch (CPU) and the test tools.
$(VENV)/.installed-test: $(VENV)/.installed
	@echo "== takes: installing the test tools and torch (CPU, about 750 MB) =="
	$(PIP_INSTALL) $(TORCH)
	$(PIP_INSTALL) -e '.[mcp,bluesky,torch,test,postgres]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

index: install
	$(BIN)/takes index --if-missing

run: index
	$(BIN)/takes serve --host $(HOST) --port $(PORT)

# The page's browser tests drive the system Chromium (Playwright cannot download its own here).
chromium:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

test: install-test chromium
	$(BIN)/python -m pytest

eval: index
	$(BIN)/takes eval $(JUDGMENTS)

bench: install-test
	$(BIN)/python -m bench

# The PostgreSQL store beside the embedded one (docs/PERFORMANCE.md); starts its own server.
bench-postgres: install-test
	$(BIN)/python -m bench.postgres --docs

# Re-derive embeddings/shipped/ from the shipped weights (after a change of recipe); commit the result.
int8-model: install-test
	$(BIN)/python -m embeddings.ship

clean:
	rm -rf $(VENV) data build *.egg-info
