# vitune: `make demo` and `make test` work from a fresh clone, offline except for the package index.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vitune-installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# mkdocs-material prints a banner about its successor on every build
export NO_MKDOCS_2_WARNING ?= 1

.PHONY: setup chromium demo test test-fast docs docs-serve bench clean

setup: $(STAMP) chromium

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv || echo "uv unavailable: installing with pip alone"
	# torch and torchvision through pip, which takes the wheels a machine keeps on disk (its pip config);
	# uv reads no pip config and would download a CUDA build of several GB. uv then resolves the rest in seconds.
	$(PY) -m pip install --quiet --disable-pip-version-check "torch>=2.6" torchvision
	if $(VENV)/bin/uv --version >/dev/null 2>&1; then \
	  $(VENV)/bin/uv pip install --quiet --python $(PY) -e ".[dev]"; \
	else $(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"; fi
	$(PY) -c "import vitune, torch, transformers, datasets; print('vitune', vitune.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| datasets', datasets.__version__)"
	touch $(STAMP)

# `vitune serve`'s browser test drives Debian's chromium with Playwright (which downloads no browser here):
# installed when missing, as root or through sudo; without either the test says why it skips.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	  else echo "chromium missing and no root or sudo: the browser test will skip"; exit 0; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$sudo apt-get install -y -q chromium >/dev/null || { $$sudo apt-get update -q >/dev/null && $$sudo apt-get install -y -q chromium >/dev/null; } \
	  || echo "chromium could not be installed: the browser test will skip"; }

demo: setup
	$(VENV)/bin/vitune demo --out runs/demo

# The layer contracts of pyproject.toml, the docs site (a broken link or API reference fails), then the suite,
# one pytest-xdist worker per core (at most 4), each test file on one worker so that its module fixtures are built once.
PYTEST_WORKERS := -n auto --maxprocesses 4 --dist loadfile
test: setup
	$(VENV)/bin/lint-imports --no-logo
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir site
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_WORKERS) tests

test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_WORKERS) -m "not slow" tests

# The docs site into site/ (open site/index.html), or served with live reload on http://127.0.0.1:8000/.
docs: setup
	$(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: setup
	$(VENV)/bin/mkdocs serve

bench: setup
	$(PY) bench/data_throughput.py
	$(PY) bench/loader.py
	$(PY) bench/train_vs_hf.py
	$(PY) bench/heads.py
	$(PY) bench/predict_memory.py
	$(PY) bench/fuzz.py
	$(PY) bench/serve.py
	$(PY) bench/lora_parameters.py
	$(PY) bench/explain.py
	$(PY) bench/distributed.py
	$(PY) bench/clinical.py
	$(PY) bench/inference.py
	$(PY) bench/forward_pass_size.py

clean:
	rm -rf $(VENV) runs build site *.egg-info
