# Single entry point. Every target creates (or reuses) the local .venv by itself.
#   make run    train if needed -> archive -> serve -> one real prediction (server left running)
#   make test   ruff + unit, integration (real TorchServe) and docker-compose tests
# MNIST comes from $MNIST_DIR when set, else it is downloaded once into ~/.cache/lenet-mnist.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
HANDLER_SOURCES := $(wildcard handler/*.py) handler/response.schema.json
DURATION ?= 10m

.PHONY: venv train archive serve stop status run predict test test-unit lint schema \
        bench bench-batch bench-preprocess loadtest tune compose-test faults soak clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	rm -f $(VENV)/.installed-*
	touch $@

# --- train -> archive -> serve -------------------------------------------------------------
artifacts/lenet.pt: | $(STAMP)
	$(PY) -m train

train: $(STAMP)
	$(PY) -m train $(ARGS)

model_store/lenet.mar: artifacts/lenet.pt $(HANDLER_SOURCES) deploy/model-config.yaml | $(STAMP)
	$(PY) -m deploy archive

archive: model_store/lenet.mar

serve: model_store/lenet.mar
	$(PY) -m deploy serve

stop: | $(STAMP)
	$(PY) -m deploy stop

status: | $(STAMP)
	$(PY) -m deploy status

# The main job: everything a new user needs to see a real answer.
run: model_store/lenet.mar
	$(PY) -m deploy serve
	$(PY) -m client demo

# --- tests ---------------------------------------------------------------------------------
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m handler.schemas --check

# As root, docker-tools.sh first installs the Docker engine and Compose where missing (Debian
# packages), so the compose tests run for real on a fresh machine; otherwise they skip, saying why.
test: lint model_store/lenet.mar
	bash deploy/docker-tools.sh
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: lint
	$(PY) -m pytest -m "not integration and not docker and not slow" $(PYTEST_ARGS)

schema: $(STAMP)
	$(PY) -m handler.schemas

# --- benchmarks and operations (not part of CI) --------------------------------------------
bench-preprocess: $(STAMP)
	$(PY) -m tools.preprocess_bench --bench

bench: model_store/lenet.mar
	$(PY) -m loadtests bench

bench-batch: model_store/lenet.mar
	$(PY) -m batch bench

loadtest: model_store/lenet.mar
	$(PY) -m loadtests run $(ARGS)

tune: model_store/lenet.mar
	$(PY) -m loadtests tune $(ARGS)

compose-test: model_store/lenet.mar
	bash deploy/compose-test.sh

faults: model_store/lenet.mar
	$(PY) -m pytest -m faults tests/test_faults.py $(PYTEST_ARGS)

soak: model_store/lenet.mar
	$(PY) -m loadtests soak --duration $(DURATION)

clean:
	rm -rf artifacts model_store/*.mar .run logs loadtests/results
