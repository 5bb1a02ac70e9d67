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
