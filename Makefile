# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
S2D := $(VENV)/bin/s2d
PYTEST := $(VENV)/bin/pytest

.PHONY: venv demo test test-all unit paper lint format clean

venv:
	bash scripts/setup.sh

demo: venv
	$(S2D) run configs/demo.yaml

lint: venv  # ruff's lint and format check (`make format` applies its fixes); the layer contracts, no import cycle
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python scripts/lint_layers.py

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: venv lint
	$(PYTEST) -m "not slow"

test-all: venv
	$(PYTEST)

paper: venv  # every paper pairing of configs/ plus the demo, then the System 2 probe -> docs/results.md (<= 60 min)
	$(VENV)/bin/python scripts/paper.py

unit: venv
	$(PYTEST) -m "not integration and not slow"

clean:
	rm -rf runs .cache .pytest_cache
