#!/usr/bin/env bash
# flux-tests.sh PYTHON [PYTEST ARGS...] - run the flux backend's tests (tests/test_flux_real.py
# and tests/test_flux.py) inside a real Flux instance of 2 brokers on this host; see in-flux.sh
# for where flux-core comes from. Without flux-core the tests are skipped, loudly, unless
# REQUIRE_FLUX=1. Inside the instance REQUIRE_FLUX=1 is set, so a test skipped there fails.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${1:?usage: flux-tests.sh PYTHON [PYTEST ARGS...]}
shift
WHAT="the real-Flux tests" exec bash "$here/in-flux.sh" "$python" \
    env REQUIRE_FLUX=1 "$python" -m pytest tests/test_flux_real.py tests/test_flux.py "$@"
