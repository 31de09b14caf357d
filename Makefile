# Two commands set everything up on a fresh machine (Python 3 only):
#   make demo   - install into .venv, run the demo search on street-world, print best --retest
#   make test   - install into .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-all lint clean

# Re-install only when pyproject.toml changes: a second `make` does no download.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,mlflow]'
	touch $(STAMP)

install: $(STAMP)

# Each demo is a new experiment results/demo-<time>; best and report take the newest.
demo: $(STAMP)
	$(BIN)/vpr-tune run search_spaces/demo.yaml
	$(BIN)/vpr-tune report
	$(BIN)/vpr-tune best --retest

# Default suite (fast) then the slow end-to-end tests.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
