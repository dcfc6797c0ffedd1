# Two entry points, each sets itself up on first use:  make quickstart (the runtime)  |  make test (adds .[dev])
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: help quickstart test test-fast install record docs clean-cache
.DEFAULT_GOAL := help

help:  # plain `make`: what there is to run (it would otherwise build .venv, the first target below)
	@echo "make quickstart   set up .venv on first use, then run sweeps/quickstart.py on the bundled IMDB data"
	@echo "make test         set up .venv with the test tools on first use, then run the whole test suite"
	@echo "make test-fast    the suite without the slow end-to-end tests, for iteration"
	@echo "make record       make test that also rewrites results/reliability.md and the MLflow UI screenshots"
	@echo "make install      only set up .venv (the runtime)"
	@echo "make docs         rewrite docs/settings.md and the models catalog from the declarations"
	@echo "make clean-cache  remove the preprocessing cache (.cache/imdb_ray)"

# torch first: the local CPU wheel where there is one (fast, no CUDA download), PyTorch's CPU index
# on other GPU-less machines, PyPI's default CUDA build where nvidia-smi finds a GPU. --no-deps on
# the local wheel: its dependencies come with the project install, from the normal index.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install torch==2.13.0; \
	else $(BIN)/pip install --no-index --no-deps torch==2.13.0 2>/dev/null \
	  || $(BIN)/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu; fi
	$(BIN)/pip install -e .
	touch $@

# the test tools and what the tests exercise beyond the runtime (MiniLM, bitsandbytes, playwright): `make test` only
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

quickstart: $(VENV)/.installed
	$(BIN)/python -m imdb_ray sweep sweeps/quickstart.py

# two pytest-xdist workers: the end-to-end tests spend much of their time waiting on Ray and MLflow
# processes, so two at a time fill two cores (TEST_WORKERS=1 for one at a time, more on a bigger machine)
# (--durations: the slowest tests, so every CI log shows where the suite's wall time goes)
TEST_WORKERS ?= 2
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=15

# for iteration: all but the tests marked slow (end-to-end sweeps on Ray, fault injection); CI runs the whole suite
test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow"

# make test that also rewrites what the tests observe into results/: reliability.md (when every reliability case
# passed) and the MLflow UI screenshots; `make test` itself leaves results/ as it is
record: $(VENV)/.installed-dev
	IMDB_RAY_RECORD_RESULTS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=15

# docs/settings.md and the models catalog from the declarations (a test fails when either is out of step)
docs: $(VENV)/.installed
	$(BIN)/python -c "from imdb_ray.cli.options import settings_markdown; open('docs/settings.md', 'w').write(settings_markdown())"
	$(BIN)/python -c "from imdb_ray.cli.options import MODELS_CATALOG, models_catalog; MODELS_CATALOG.write_text(models_catalog())"

clean-cache:
	rm -rf .cache/imdb_ray
