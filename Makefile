# The two commands: `make demo` runs the main job, `make test` runs the whole test suite.
# Both create .venv when it is missing or older than the dependency files, then install the project.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-quick lint bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/scaling demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests

test-quick: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(VENV)/bin/scaling bench data --json

clean:
	rm -rf $(VENV) runs .pytest_cache
