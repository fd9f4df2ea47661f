# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -e '.[test,mpi]'

demo: install
	$(PY) examples/quickstart.py

test: install
	$(PY) -m pytest
	for example in examples/*.py; do $(PY) $$example > /dev/null || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
