# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
S2D := $(VENV)/bin/s2d
PYTEST := $(VENV)/bin/pytest

.PHONY: venv demo test test-all unit clean

venv:
	bash scripts/setup.sh

demo: venv
	$(S2D) run configs/demo.yaml

test: venv
	$(PYTEST) -m "not slow"

test-all: venv
	$(PYTEST)

unit: venv
	$(PYTEST) -m "not integration and not slow"

clean:
	rm -rf runs .cache .pytest_cache
