"""Checked by mypy in tests/test_types.py (never run): the types a user of remotefn sees."""

from __future__ import annotations

from concurrent.futures import Future

import remotefn
from remotefn import RemoteFuture, remote


@remote
def scale(x: int, factor: float = 2.0) -> float:
    return x * factor


@remote(block=True, max_workers=2)
def label(value: float) -> str:
    return f"{value:.1f}"


@remote
async def fetch(key: str) -> bytes:
    return key.encode()


@remote(block=True)
async def fetch_pooled(key: str) -> int:
    return len(key)


async def in_asyncio() -> None:
    reveal_type(await scale(2))  # R10
    reveal_type(fetch("a"))  # R11
    reveal_type(await fetch_pooled("a"))  # R12


class Model:
    def __init__(self, k: int) -> None:
        self.k = k

    @remote
    def energy(self, x: int) -> float:
        return self.k * x / 2


future = scale(3)
reveal_type(future)  # R1
reveal_type(future.result())  # R2
chained = label(future)  # a future where a float goes: chaining is the point
reveal_type(chained)  # R3
reveal_type(scale.map([1, 2, 3]))  # R4
reveal_type(scale.local(3))  # R5
reveal_type(Model(2).energy(4))  # R6
reveal_type(remotefn.gather([future, future]))  # R7
reveal_type(scale.options(retries=2))  # R8
with remotefn.session("local") as session:
    reveal_type(session.submit(len, "abc"))  # R9
plain: Future[float] = future
text: str = future.result()  # E1: a float is not a str
