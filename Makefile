# gated: `make demo`, `make test`, `make bench` on a fresh Debian machine with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test check bench lint typecheck schema system-deps clean

# The project itself: enough for the daemon (the demo adds its broker below).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

# The demo's embedded MQTT broker (amqtt), an extra: the daemon itself uses a real broker.
$(DEMO_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $(DEMO_STAMP)

# What the tests and benchmarks need on top: test tools, the second OCR engine (PyTorch), and
# the demo's broker (the tests run the demo).
$(TEST_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,easyocr,demo]'
	touch $(TEST_STAMP)

## The demo gate: embedded broker, simulated lanes, the daemon, scripted trucks (Ctrl-C to stop).
demo: $(DEMO_STAMP)
	$(BIN)/gated demo $(DEMO_ARGS)

system-deps:
	./scripts/install-system-deps.sh

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

## Everything: lint, types, and the whole test suite on real parts, in TEST_WORKERS processes.
## Most tests wait on a broker, a device or a child process: on two cores, three processes kept
## the CPU busier (the suite took 9 min 10 s against 11 min 40 s with two).
TEST_WORKERS ?= 3
CHECK_WORKERS ?= 2
test: $(TEST_STAMP) system-deps lint typecheck
	HYPOTHESIS_PROFILE=ci $(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=25

## The inner loop, about a minute: lint, types, and the fast tier (tests that need no broker,
## simulator, PostgreSQL, OCR engine or child process; tests/conftest.py marks them) with few
## hypothesis examples. `make test` stays the whole suite.
check: lint typecheck
	HYPOTHESIS_PROFILE=dev $(BIN)/pytest -m fast -x -q -n $(CHECK_WORKERS)

bench: $(TEST_STAMP)
	$(BIN)/gated bench policy
	$(BIN)/gated bench store
	$(BIN)/gated bench pipeline
	$(BIN)/gated bench rpm
	$(BIN)/gated bench ocr
	$(BIN)/gated bench commands
	$(BIN)/gated bench holds
	$(BIN)/gated bench lanes

schema: $(STAMP)
	$(BIN)/python -c "from gated.config import json_schema; open('config/gated.schema.json', 'w').write(json_schema())"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
