# The README's two commands live here and in the README; .ci/run calls `make test`.
PYTHON ?= python3

.PHONY: test install services lint demo

install:
	$(PYTHON) -m pip install -q -e ".[dev]"

# Java 17 and Maven for the local Kafka broker (jars come from Maven Central on first use).
services:
	scripts/install-services.sh

# ruff's linter and formatter (settings in pyproject.toml); `ruff format .` fixes the layout
lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

test: install services lint
	$(PYTHON) -m pytest --durations=20

demo: install
	rtsim run
