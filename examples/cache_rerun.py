"""The result cache: run the same script twice; the second run is served from disk.

This file runs a small script twice, in two fresh processes, and shows what each run did.
"""

import os
import subprocess
import sys
import tempfile
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, time
    import remotefn
    from remotefn import remote

    @remote
    def slow_square(x):
        time.sleep(0.2)
        return x * x

    with remotefn.session("local", cache_directory=sys.argv[1], forward_output=False):
        futures = slow_square.map(range(4))
        results = [f.result() for f in futures]
        hits = sum(f.info.from_cache for f in futures)
        print(f"results {results}: {hits} of {len(futures)} from the cache")
""")

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        for run in ("first run: ", "second run:"):
            out = subprocess.run([sys.executable, "-c", SCRIPT, directory], check=True,
                                 capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
            print(run, out.stdout.strip())
        listing = subprocess.run([sys.executable, "-m", "remotefn", "cache", "ls", directory],
                                 capture_output=True, text=True)
        print(listing.stdout)
