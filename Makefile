# Two commands on a fresh machine: `make demo` (creates .venv, runs the journey), `make test`.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-stamp

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q "uv>=0.9,<1"
	# bytecode at install: machines with PYTHONDONTWRITEBYTECODE would recompile every import
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python --compile-bytecode -r requirements.lock -e .
	touch $(STAMP)

.PHONY: install demo test ui lock
install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/asgard demo

test: $(STAMP)
	$(VENV)/bin/pytest

ui: $(STAMP)
	$(VENV)/bin/asgard ui

lock:
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 -q -o requirements.lock
	# what the images install: the same pins without the dev extra (no pytest, playwright, ...)
	$(VENV)/bin/uv pip compile pyproject.toml -c requirements.lock --python-version 3.11 -q -o requirements.runtime.lock
