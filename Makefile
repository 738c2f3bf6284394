# Two entry points (see README): `make demo` and `make test`. Both install what they need first,
# idempotently, into a local virtualenv (.venv); nothing is installed system-wide except the
# Debian chromium package that the App browser test drives.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
REQS := requirements.txt requirements-dev.txt requirements-dask.txt
STAMP := $(VENV)/.installed-$(shell cat $(REQS) | sha1sum | cut -c1-12)

.PHONY: install demo test test-all lint browser-deps data-deps benchmark-quality benchmark-scoring \
	benchmark-scale benchmark-dask

$(STAMP): $(REQS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# End to end on real images with a real pretrained model, offline.
demo: install
	$(PY) scripts/demo.py

# Headless chromium (Debian) + playwright-core (npm) for the App test.
browser-deps:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	test -d tests/browser/node_modules/playwright-core || \
	  (cd tests/browser && npm install --no-audit --no-fund --silent)

# Fashion-MNIST (Debian package) for the quality benchmark and its fast test.
data-deps:
	test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)

# Regenerates benchmarks/results/quality.{md,json,png} (see README).
benchmark-quality: install data-deps
	$(PY) benchmarks/quality.py

# Engine vs the straightforward implementation (see README, Performance).
benchmark-scoring: install
	$(PY) benchmarks/bench_scoring.py --n 10000 20000 50000 --engine numba-dense numba-windowed --baseline-seconds 30

# compute_zcore end to end on 1.28M x 512, delegated: builds the dataset once (~2 min), runs ~10 min.
benchmark-scale: install
	$(PY) benchmarks/bench_scale.py

# Dask LocalCluster vs the in-process engine, and the projection for 24M samples.
benchmark-dask: install
	$(PY) benchmarks/bench_dask.py --n 50000 1280000 --points 500000 200000

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The default test run: unit + integration + App browser test (slow checks are opt-in: test-all).
test: install browser-deps data-deps lint
	$(PY) -m pytest

test-all: install browser-deps data-deps
	$(PY) -m pytest -m ""
