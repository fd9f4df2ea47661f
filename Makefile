# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-deps docs bench bench-plot install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -e '.[test,mpi,dashboard]'

demo: install
	$(PY) examples/quickstart.py

# The SLURM tests need a cluster: an existing one is used; as root, scripts/test-cluster.sh
# starts one (and stops it afterwards); otherwise those tests are skipped with the reason.
# The flux tests run inside a real Flux instance (scripts/flux-tests.sh finds flux-core: ../shared
# beside the repository, /opt/flux, or a flux on PATH); without one they are skipped, loudly.
# CPython's own executor tests (tests/test_conformance.py) come from Debian's testsuite package;
# the dashboard's browser tests drive Debian's chromium through chromium-driver (as root, both
# are installed here; otherwise those tests are skipped with the reason).
test-deps: $(PY)
	$(PY) -m pip install --quiet -e '.[test,mpi,docs,dashboard]'
	@version=$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	if [ ! -e /usr/lib/python$$version/test/test_concurrent_futures.py ] && [ "$$(id -u)" = 0 ] \
	    && command -v apt-get > /dev/null; then \
	  echo "installing libpython$$version-testsuite for the conformance tests"; \
	  apt-get install -y -q libpython$$version-testsuite > /dev/null \
	    || { apt-get update -q > /dev/null && apt-get install -y -q libpython$$version-testsuite > /dev/null; } \
	    || echo "libpython$$version-testsuite is not available: the conformance tests will be skipped"; \
	fi
	@if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } && [ "$$(id -u)" = 0 ] \
	    && command -v apt-get > /dev/null; then \
	  echo "installing chromium and chromium-driver for the dashboard's browser tests"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver > /dev/null \
	    || { apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive \
	         apt-get install -y -q chromium chromium-driver > /dev/null; } \
	    || { echo "could not install chromium and chromium-driver" >&2; exit 1; }; \
	fi

# The site (mkdocs.yml) from docs/, README.md and the docstrings; any warning fails it.
docs: $(PY)
	@$(PY) -c 'import remotefn, mkdocs, mkdocstrings_handlers.python' 2> /dev/null \
	    || $(PY) -m pip install --quiet -e '.[docs]'
	$(PY) -m mkdocs build --strict

# With a cluster, REQUIRE_SLURM=1: a SLURM test that skips anyway fails the run.
test: test-deps docs
	@started=0; \
	if sinfo -h > /dev/null 2>&1; then echo "using the running SLURM"; export REQUIRE_SLURM=1; \
	elif [ "$$(id -u)" = 0 ]; then bash scripts/test-cluster.sh up && started=1 || exit 1; \
		export REQUIRE_SLURM=1; \
	else echo "no SLURM and not root: the SLURM tests will be skipped"; fi; \
	$(PY) -m pytest --ignore=tests/test_flux_real.py; status=$$?; \
	if [ $$started = 1 ]; then bash scripts/test-cluster.sh down; fi; \
	exit $$status
	bash scripts/flux-tests.sh $(PY)
	for example in examples/*.py; do $(PY) $$example > /dev/null || exit 1; done
	$(PY) benchmarks/run.py --quick --systems remotefn,processpool --out /tmp/remotefn-bench.json
	$(PY) benchmarks/ratios.py --quick --runs 1 > /dev/null
	$(PY) benchmarks/scaling.py --quick > /dev/null
	$(PY) benchmarks/fanout.py --runs 2 > /dev/null

# Every system, full sizes; writes benchmarks/results.json (and the Flux row, in a real Flux
# instance when flux-core can be had, benchmarks/results-flux.json); then the ratios to
# ProcessPoolExecutor as medians of 5 interleaved runs with their range, and the scaling
# benchmark (benchmarks/results-ratios.json, results-scaling.json).
bench: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/run.py
	$(PY) benchmarks/arrays.py --out benchmarks/results-arrays.json
	$(PY) benchmarks/imports.py --out benchmarks/results-imports.json
	$(PY) benchmarks/ratios.py --runs 5 --others executorlib --out benchmarks/results-ratios.json
	$(PY) benchmarks/scaling.py --out benchmarks/results-scaling.json
	WHAT="the Flux row" bash scripts/in-flux.sh $(PY) $(PY) benchmarks/flux_bench.py \
	    --out benchmarks/results-flux.json

# The scaling curve in docs/performance.md: measured afresh, drawn to docs/scaling.png. With
# BEFORE=FILE (results of scaling.py on another tree), that run is drawn beside it, dashed.
bench-plot: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/scaling.py --out benchmarks/results-scaling.json
	$(PY) benchmarks/plot.py benchmarks/results-scaling.json --out docs/scaling.png \
	    $(if $(BEFORE),--before $(BEFORE))

clean:
	rm -rf $(VENV) build site *.egg-info
