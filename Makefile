# colorray: `make run` rebuilds the DVC pipeline on the embedded default dataset,
# `make test` runs the test suite. Both create and install the virtual environment first.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# No phoning home from the tools we drive; servers and Ray stay on this machine.
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0
export PATH := $(BIN):$(PATH)

.PHONY: venv run test bench docs clean

venv: $(STAMP)

# Reinstall only when the declared or pinned dependencies change. pip compiles the bytecode of
# every package it installs but an editable one: colorray's is compiled here, or, where
# PYTHONDONTWRITEBYTECODE is set (CI, many containers), every process would compile its modules
# again (0.3 CPU-s for all of them; the test suite starts about a hundred such processes).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	$(BIN)/python -m compileall -q colorray
	touch $@

run: $(STAMP)
	dvc repro

# Two test processes (pytest-xdist): the Ray and DVC tests spend much of their time waiting on
# process start-up; each process has its own HOME, Ray temp folder and clusters (tests/conftest.py).
test: $(STAMP)
	python -m pytest -n 2 --dist loadgroup

bench: $(STAMP)
	python benchmarks/loader.py

# The docs site (MkDocs + Material), the Reference pages generated from the code; a broken link fails.
docs: $(STAMP)
	mkdocs build --strict -d build/site

clean:
	rm -rf $(VENV) build *.egg-info
