"""Run a test's workers in threads at once, keeping what they raise."""

from __future__ import annotations

import threading
from typing import Callable


def run_threads(worker: Callable[[int], object], count: int,
                timeout: float | None = None) -> list[BaseException]:
    """Start worker(0) .. worker(count - 1) in threads, wait for them all (each for at most
    `timeout` seconds), and return what they raised, so the test can assert it is empty:
    an exception inside a thread is otherwise lost to the test. A worker still running
    after the timeout counts as an error too."""
    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            worker(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        if t.is_alive():
            errors.append(TimeoutError(f"{t.name} was still running after {timeout}s"))
    return errors


def opener_done(pool: object, timeout: float = 10.0) -> None:
    """Wait until pool's background opener has no connect in flight and no thread left.

    A worker mid-step holds its pool (the opener, while it opens for a waiter or for
    min_idle), and a test that then snapshots the counts or drops the pool must let that
    step end first: with the GIL off it often has not yet."""
    import time

    deadline = time.monotonic() + timeout
    while pool.stats().opening or (pool._opener is not None and pool._opener.alive):  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise AssertionError(f"the opener is still busy: {pool.stats()}")  # type: ignore[attr-defined]
        time.sleep(0.001)
