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
	$(PY) examples/quickstart.py > /dev/null

clean:
	rm -rf $(VENV) build *.egg-info
