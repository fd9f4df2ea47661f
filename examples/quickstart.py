"""remotefn in one page: decorate, call, chain, map, a block pool with init, and an error."""

import remotefn
from remotefn import remote


@remote
def square(x: int) -> int:
    return x * x


@remote
def add(a: int, b: int) -> int:
    return a + b


def load_table() -> dict:
    """Runs once per block worker; its dict fills the arguments a call leaves out."""
    return {"table": {i: i ** 3 for i in range(100)}}


@remote(block=True, max_workers=2, init=load_table)
def cube(i: int, table: dict) -> int:
    return table[i]


@remote
def divide(a: float, b: float) -> float:
    return a / b


def main() -> None:
    with remotefn.session("local") as session:
        # A call returns a concurrent.futures.Future at once.
        future = square(7)
        print("square(7) =", future.result(), "ran on worker", future.info.worker_id)

        # Futures passed as arguments are resolved first, without blocking the caller.
        total = add(square(3), square(4))
        print("3^2 + 4^2 =", total.result())

        # map: one future per element, in order; gather waits for them all.
        print("squares:", remotefn.gather(square.map(range(5))))

        # A plain @remote starts a worker process per call (tens of ms each); for many
        # short calls use block=True: a pool of persistent workers, here with init loading
        # the table once per worker.
        print("cubes:", [f.result() for f in cube.map(range(5))])

        # Plain functions go through the session as through any Executor.
        print("max via session.map:", list(session.map(max, [1, 5], [4, 2])))

        # The remote exception comes back with its own type and the remote traceback.
        try:
            divide(1, 0).result()
        except ZeroDivisionError as error:
            print("divide(1, 0) raised", type(error).__name__, "- remote traceback attached:",
                  type(error.__cause__).__name__)


if __name__ == "__main__":
    main()
