"""An MPI function on 2 ranks: the result is every rank's return value, in rank order."""

import remotefn
from remotefn import remote


@remote(cores=2)
def calc(i):
    from mpi4py import MPI

    size = MPI.COMM_WORLD.Get_size()
    rank = MPI.COMM_WORLD.Get_rank()
    return i, size, rank


if __name__ == "__main__":
    with remotefn.session("local", max_cores=2):
        print(calc(3).result())  # [(3, 2, 0), (3, 2, 1)]
