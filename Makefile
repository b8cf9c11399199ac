# Everything a fresh clone needs: `make run` to search, `make test` to check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The exact CPU build of torch; an unpinned torch pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
INDEX_DIR ?= $(CURDIR)/data/index
export TAKES_INDEX_DIR ?= $(INDEX_DIR)
export HF_HUB_OFFLINE := 1
# The shared dev judgments when present, else the copy the tests use.
JUDGMENTS ?= $(firstword $(wildcard ../shared/eval/dev_queries.json) tests/data/dev_queries.json)

.PHONY: run test install index bench eval clean chromium

# The stamp depends on pyproject.toml, so a changed dependency list reinstalls.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[mcp,bluesky,test]'
	touch $@

install: $(VENV)/.installed

index: install
	$(BIN)/takes index --if-missing

run: index
	$(BIN)/takes serve --host 127.0.0.1 --port 8000

# The page's browser tests drive the system Chromium (Playwright cannot download its own here).
chromium:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

test: install chromium
	$(BIN)/python -m pytest

eval: index
	$(BIN)/takes eval $(JUDGMENTS)

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) data build *.egg-info
