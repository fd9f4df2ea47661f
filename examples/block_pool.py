"""A block pool: init loads the data once per worker, and every call reuses it.

Both workers of the pool load the table once, then take calls from the same queue, so the
twenty calls are shared between them.
"""

import collections
import os
import time

import remotefn
from remotefn import remote


def load_data():
    """Runs once in each worker; the dict fills the keyword arguments calls leave out."""
    print(f"loading the table in worker {os.getpid()}")
    return {"table": [i * i for i in range(1_000_000)]}


@remote(block=True, max_workers=2, init=load_data)
def lookup(i, table):
    time.sleep(0.1)  # stands for the real work done with the table
    return table[i]


if __name__ == "__main__":
    with remotefn.session("local", max_cores=2):
        futures = lookup.map(range(0, 1_000_000, 50_000))
        print([f.result() for f in futures])
        served = collections.Counter(f.info.pid for f in futures)
        print("served by", len(served), "workers:",
              ", ".join(f"{count} calls in worker {pid}" for pid, count in served.items()))
