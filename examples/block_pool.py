"""A block pool: init loads the data once per worker, and every call reuses it."""

import os

import remotefn
from remotefn import remote


def load_data():
    """Runs once in each worker; the dict fills the keyword arguments calls leave out."""
    print(f"loading the table in worker {os.getpid()}")
    return {"table": [i * i for i in range(1_000_000)]}


@remote(block=True, max_workers=2, init=load_data)
def lookup(i, table):
    return table[i]


if __name__ == "__main__":
    with remotefn.session("local", max_cores=2):
        futures = lookup.map(range(0, 1_000_000, 100_000))
        print([f.result() for f in futures])
        print("served by", len({f.info.worker_id for f in futures}), "workers")
