# Single entry point. Every target creates (or reuses) the local .venv by itself.
#   make run    train if needed -> archive -> serve -> one real prediction (server left running)
#   make demo   the draw-a-digit page on http://127.0.0.1:8000 (TorchServe started if needed)
#   make test   ruff + unit, integration (real TorchServe), browser and docker-compose tests
# MNIST comes from $MNIST_DIR when set, else it is downloaded once into ~/.cache/lenet-mnist.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
HANDLER_SOURCES := $(wildcard handler/*.py) handler/response.schema.json
DURATION ?= 10m
WEB_HOST ?= 127.0.0.1
WEB_PORT ?= 8000

.PHONY: venv train archive serve stop status run demo predict test test-unit test-browser lint schema \
        bench bench-batch bench-preprocess bench-explain loadtest tune compose-test faults soak \
        clean eval-realworld

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

# The draw-a-digit page in the foreground: Ctrl-C stops the page. TorchServe is started when it
# is not running and, as after `make run`, keeps running: `make stop` stops it.
demo: model_store/lenet.mar
	@$(PY) -m deploy status >/dev/null 2>&1 || $(PY) -m deploy serve
	@echo "Ctrl-C stops the page; TorchServe keeps running until \`make stop\`."
	$(PY) -m web --host $(WEB_HOST) --port $(WEB_PORT)

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

# Headless Chromium (Debian's chromium, installed by the tests as root) against a private
# TorchServe and the page's app. LENET_WEB_SCREENSHOT=docs/web-demo.png refreshes the README's.
test-browser: lint model_store/lenet.mar
	$(PY) -m pytest -m browser tests/browser $(PYTEST_ARGS)

schema: $(STAMP)
	$(PY) -m handler.schemas

# --- evaluation ----------------------------------------------------------------------------
# The real-world set (handwriting fonts and strokes as scans, photos, drawings), in-process and
# through a private TorchServe; ARGS="--subset 200" for a quick look, "--baseline OLD.pt" to compare.
eval-realworld: artifacts/lenet.pt
	$(PY) -m evaluation realworld $(ARGS)

# --- benchmarks and operations (not part of CI) --------------------------------------------
bench-preprocess: $(STAMP)
	$(PY) -m tools.preprocess_bench

bench: model_store/lenet.mar
	$(PY) -m loadtests bench $(ARGS)

bench-batch: model_store/lenet.mar
	$(PY) -m batch bench $(ARGS)

# Predictions' req/s and p50/p99 alone and beside explanation traffic, one run (docs/performance.md).
bench-explain: model_store/lenet.mar
	$(PY) -m tools.explain_bench $(ARGS)

loadtest: model_store/lenet.mar
	$(PY) -m loadtests run $(ARGS)

tune: model_store/lenet.mar
	$(PY) -m loadtests tune $(ARGS)

compose-test: model_store/lenet.mar
	bash deploy/compose-test.sh

faults: model_store/lenet.mar
	$(PY) -m pytest -m faults tests/faults $(PYTEST_ARGS)

soak: model_store/lenet.mar
	$(PY) -m loadtests soak --duration $(DURATION)

clean:
	rm -rf artifacts model_store/*.mar .run logs loadtests/results
