# The README's two commands. Each creates .venv if absent and (re)installs when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The report's viewer: NiiVue from the npm registry (viewer/package-lock.json), copied into the package.
NIIVUE := src/gdfree/report/assets/niivue.umd.js

.PHONY: demo test test-slow typecheck lint browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(VENV)/.installed $@

$(NIIVUE): viewer/package.json viewer/package-lock.json
	cd viewer && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p $(@D)
	cp viewer/node_modules/@niivue/niivue/dist/niivue.umd.js $@.part && mv $@.part $@

# The browser tests drive Debian's Chromium (no browser download); installed here when absent and allowed.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; }

demo: $(VENV)/.installed $(NIIVUE)
	$(BIN)/gdfree demo

test: $(VENV)/.installed-test $(NIIVUE) browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	GDFREE_BROWSER_TESTS=required $(BIN)/python -m pytest -q

# The heavy checks (marked slow: the whole-pipeline expectation, real-scan registration, torchrun); CI runs them.
test-slow: $(VENV)/.installed-test $(NIIVUE) browser
	GDFREE_BROWSER_TESTS=required $(BIN)/python -m pytest -q -m slow

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
