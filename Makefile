# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -e '.[test,mpi]'

demo: install
	$(PY) examples/quickstart.py

# The SLURM tests need a cluster: an existing one is used; as root, scripts/test-cluster.sh
# starts one (and stops it afterwards); otherwise those tests are skipped with the reason.
# With a cluster, REQUIRE_SLURM=1: a SLURM test that skips anyway fails the run.
test: install
	@started=0; \
	if sinfo -h > /dev/null 2>&1; then echo "using the running SLURM"; export REQUIRE_SLURM=1; \
	elif [ "$$(id -u)" = 0 ]; then bash scripts/test-cluster.sh up && started=1 || exit 1; \
		export REQUIRE_SLURM=1; \
	else echo "no SLURM and not root: the SLURM tests will be skipped"; fi; \
	$(PY) -m pytest; status=$$?; \
	if [ $$started = 1 ]; then bash scripts/test-cluster.sh down; fi; \
	exit $$status
	for example in examples/*.py; do $(PY) $$example > /dev/null || exit 1; done
	$(PY) benchmarks/run.py --quick --systems remotefn,processpool --out /tmp/remotefn-bench.json

# Every system, full sizes; writes benchmarks/results.json.
bench: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info
