# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench docs clean

# torch goes first and pinned: 2.13.0 is the CPU wheel on this machine's disk; any other
# torch request would pull a multi-GB CUDA build. The example plugins (plugins/*) go after the
# SDK they depend on; `make test` runs their tests too. The editable install also compiles the
# suffix trie's C core in place (setup.py; skipped without a compiler), hence its sources here.
$(STAMP): pyproject.toml setup.py $(wildcard spec_sdk/proposers/csrc/suffix/*) $(wildcard plugins/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q $(foreach p,$(wildcard plugins/*/pyproject.toml),-e $(dir $(p)))
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/spec-sdk demo

test: $(STAMP)
	$(BIN)/pytest -m "not gpu and not slow" tests plugins

# the side-by-side comparison of docs/benchmarks.md (about 10 min on a quiet 2-core CPU)
bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/spec-sdk bench --workload code,chat,agentic --json docs/bench/bench.json --plot docs/bench/bench.png

# the docs site into site/ (tests/test_docs.py builds it too, so CI fails on broken docs)
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis out site
