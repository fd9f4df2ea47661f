#!/usr/bin/env bash
# in-flux.sh PYTHON COMMAND... - run COMMAND inside a real Flux instance of 2 brokers on this
# host (`flux start --test-size=2`), with flux-python importable by PYTHON (a venv's python).
#
# flux-core is looked up in this order: ../shared/tools/flux-up.sh beside the repository
# (installs a prebuilt flux-core into /opt/flux; needs root), an existing /opt/flux, a `flux`
# on PATH. When none is found, or its bindings do not import with PYTHON, nothing runs: the
# reason is printed, loudly, and the script succeeds, unless REQUIRE_FLUX=1 is set.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${1:?usage: in-flux.sh PYTHON COMMAND...}
shift

skip() {
    echo
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! NOT RUN IN A REAL FLUX INSTANCE (${WHAT:-this}): $1"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo
    if [ "${REQUIRE_FLUX:-}" = 1 ]; then echo "REQUIRE_FLUX=1: failing"; exit 1; fi
    exit 0
}

flux_bin=
up="$root/../shared/tools/flux-up.sh"
if [ -f "$up" ] && [ "$(id -u)" = 0 ]; then
    if bash "$up" > /dev/null; then flux_bin=/opt/flux/bin/flux
    else echo "flux-tests: $up failed; looking for another flux-core" >&2; fi
fi
if [ -z "$flux_bin" ] && [ -x /opt/flux/bin/flux ]; then flux_bin=/opt/flux/bin/flux; fi
if [ -z "$flux_bin" ]; then flux_bin=$(command -v flux || true); fi
[ -n "$flux_bin" ] || skip "no flux-core: neither $up (as root), /opt/flux nor a flux on PATH"

# The `flux` command puts its own bindings on PYTHONPATH for what it starts; the Python that
# flux-core runs itself (for rc scripts and Python subcommands) needs cffi, pyyaml and ply,
# which the test extras install into this venv.
site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
    || skip "$python does not run"
export PATH="$(dirname "$flux_bin"):$PATH"
export FLUX_PYTHONPATH_PREPEND="$site${FLUX_PYTHONPATH_PREPEND:+:$FLUX_PYTHONPATH_PREPEND}"
# The bindings' own folder, as `flux` puts it on PYTHONPATH for the commands it runs.
export PYTHONPATH=$("$flux_bin" env printenv PYTHONPATH)
why=$("$python" -c 'import flux, flux.job' 2>&1) \
    || skip "flux-python does not import with $python ($(echo "$why" | tail -n 1))"

echo "running in a real Flux instance: $("$flux_bin" version | head -n 1)"
cd "$root"
exec timeout 1800 "$flux_bin" start --test-size=2 "$@"
