# Two commands on a fresh machine: `make demo` (creates .venv, runs the journey), `make test`.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-stamp
# asgard.pth: this venv's dagster/feast/mlflow commands default to ./.asgard and its
# Dagster instance (asgard_assets/instance.py), so CLI runs show in `make ui`
PTH_STAMP := $(VENV)/.asgard-pth-stamp

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q "uv>=0.9,<1"
	# bytecode at install: machines with PYTHONDONTWRITEBYTECODE would recompile every import
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python --compile-bytecode -r requirements.lock -e .
	touch $(STAMP)

$(PTH_STAMP): $(STAMP) asgard_assets/instance.py
	$(VENV)/bin/python -m asgard_assets.instance
	touch $(PTH_STAMP)

.PHONY: install demo test ui stop lock
install: $(STAMP) $(PTH_STAMP)

demo: install
	$(VENV)/bin/asgard demo

# the UI test needs Chromium: without it (and without CI=true) it is skipped, said loudly
test: install
	@command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || \
	    echo "*** Chromium not found: tests/test_ui.py will be SKIPPED (install it: apt-get install chromium, as .ci/run does) ***"
	# two workers, one per core (tests/conftest.py keeps tests sharing a fixture on one)
	$(VENV)/bin/pytest -n 2

ui: install
	$(VENV)/bin/asgard ui

stop: install
	$(VENV)/bin/asgard stop

lock:
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 -q -o requirements.lock
	# what the images install: the same pins without the dev extra (no pytest, playwright, ...)
	$(VENV)/bin/uv pip compile pyproject.toml -c requirements.lock --python-version 3.11 -q -o requirements.runtime.lock
