"""Importable functions for the tests (pickled by reference)."""

from remotefn import remote


@remote
def add(a: int, b: int = 1) -> int:
    """Add two numbers."""
    return a + b


def plain_double(x):
    return 2 * x


@remote(block=True, max_workers=1)
def pooled_square(x):
    return x * x


def calc(i):
    """The seed MPI example: (i, size, rank) on every rank."""
    from mpi4py import MPI

    return i, MPI.COMM_WORLD.Get_size(), MPI.COMM_WORLD.Get_rank()


class Model:
    """A class whose methods run remotely."""

    def __init__(self, k):
        self.k = k

    @remote
    def energy(self, x: int) -> int:
        """The energy at x."""
        return self.k * x

    @remote
    def bump(self):
        self.k += 1  # the worker's copy of the instance
        return self.k

    @remote
    @classmethod
    def make(cls, k):
        return cls(k)

    @remote
    @staticmethod
    def twice(x):
        return 2 * x


#: How many times load_offset ran in this process.
INIT_RUNS = 0


def load_offset():
    global INIT_RUNS
    INIT_RUNS += 1
    return {"offset": 100}


@remote(block=True, init=load_offset)
def shifted(x, offset, scale=1):
    return scale * x + offset


@remote
async def fetch(x):
    import asyncio

    await asyncio.sleep(0)
    return x + 1


@remote(block=True, max_workers=1)
async def loop_of_worker():
    import asyncio
    import os

    return os.getpid(), id(asyncio.get_running_loop())


@remote
async def fail_async():
    raise KeyError("async")
