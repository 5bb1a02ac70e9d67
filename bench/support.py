"""What the benchmark suites share."""

from __future__ import annotations

from typing import Any, Callable


class FakeConn:
    """Just enough of a DB-API connection for every pool to hold it (no I/O)."""

    threadsafety = 1  # DBUtils asks the creator

    def close(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def commit(self) -> None:
        pass

    def cursor(self) -> Any:
        raise NotImplementedError


def measure(benchmark: Any, fn: Callable[[], Any], iterations: int = 2000, rounds: int = 50) -> Any:
    """Time one call of fn, averaged over `iterations` calls per round, so the timer's own
    cost is amortised away."""
    return benchmark.pedantic(fn, iterations=iterations, rounds=rounds, warmup_rounds=2)
