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
