"""Steady small writes through a pool while a test (or the comparison) switches the primary
over or crashes it: what was acknowledged, what callers saw, and when writes came back."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fastpool.hooks import MULTIHOST_EVENTS


@dataclass
class Workload:
    """``workers`` threads each run ``write(who, n)`` in a loop (n = 1, 2, ...) until
    ``stop()``; a call that returns is acknowledged, one that raises is an error."""

    write: Callable[[str, int], Any]
    workers: int = 4
    prefix: str = "w"  # workers are prefix0, prefix1, ...: runs on one table stay apart
    acked: list[tuple[str, int, float]] = field(default_factory=list)
    errors: list[tuple[float, BaseException]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Workload:
        for i in range(self.workers):
            t = threading.Thread(target=self._run, args=(f"{self.prefix}{i}",), daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def _run(self, who: str) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                self.write(who, n)
            except Exception as exc:
                self.errors.append((time.monotonic(), exc))
                time.sleep(0.01)  # a pool that fails fast must not spin the test
            else:
                self.acked.append((who, n, time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)
            assert not t.is_alive(), "a writer is stuck"

    def first_ack_after(self, when: float) -> float | None:
        """Seconds from `when` to the first write acknowledged after it (None: none)."""
        after = [t for _, _, t in self.acked if t >= when]
        return min(after) - when if after else None

    def missing(self, rows: set[tuple[str, int]]) -> list[tuple[str, int]]:
        """Acknowledged writes that are not in rows (what the primary has)."""
        return [(who, n) for who, n, _ in self.acked if (who, n) not in rows]

    def error_kinds(self) -> list[str]:
        return [f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"
                for _, e in self.errors]


class AsyncWorkload(Workload):
    """The same for asyncio pools: ``open()`` (a coroutine function) runs on a loop of its
    own, on a thread of its own, and returns ``(write, close)``, both coroutine functions;
    ``workers`` tasks then await ``write(who, n)`` until ``stop()``."""

    def __init__(self, open: Callable[[], Any], workers: int = 4, prefix: str = "w") -> None:  # noqa: A002
        super().__init__(lambda who, n: None, workers=workers, prefix=prefix)
        self._open = open
        self._ready = threading.Event()
        self._failed: BaseException | None = None

    def start(self) -> AsyncWorkload:
        t = threading.Thread(target=self._main, daemon=True)
        self._threads.append(t)
        t.start()
        self._ready.wait(60)
        if self._failed is not None:
            raise self._failed
        return self

    def _main(self) -> None:
        import asyncio

        async def run() -> None:
            try:
                write, close = await self._open()
            except BaseException as exc:
                self._failed = exc
                self._ready.set()
                return
            done = asyncio.Event()

            async def one(who: str) -> None:
                n = 0
                while not done.is_set():
                    n += 1
                    try:
                        await write(who, n)
                    except Exception as exc:
                        self.errors.append((time.monotonic(), exc))
                        await asyncio.sleep(0.01)
                    else:
                        self.acked.append((who, n, time.monotonic()))

            tasks = [asyncio.create_task(one(f"{self.prefix}{i}")) for i in range(self.workers)]
            self._ready.set()
            while not self._stop.is_set():
                await asyncio.sleep(0.01)
            done.set()
            await asyncio.gather(*tasks)
            await close()

        asyncio.run(run())


def events_of(db: Any) -> list[tuple[str, str | None, str | None]]:
    """Every host event of db from now on, as (event, host, reason)."""
    seen: list[tuple[str, str | None, str | None]] = []
    for name in sorted(MULTIHOST_EVENTS):
        db.on(name, lambda e: seen.append((e.event, e.host, e.reason)))
    return seen


def writer(db: Any) -> Callable[[str, int], None]:
    """A Workload's write through a thread pool: one row of the beds' writes table (both
    databases take %s placeholders through their sync drivers)."""
    def write(who: str, n: int) -> None:
        db.execute("INSERT INTO writes (who, n) VALUES (%s, %s)", (who, n))
    return write


def ready_child(script: Path, *args: str) -> subprocess.Popen[str]:
    """A script of tests/ in a fresh interpreter, once it printed READY (its writers
    run); child_result() lets it go on and reads what it reports."""
    proc = subprocess.Popen([sys.executable, str(script), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready = proc.stdout.readline().strip()
    if ready != "READY":
        proc.kill()
        raise AssertionError(ready + proc.communicate()[1][-3000:])
    return proc


def child_result(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    """Tell a ready_child the event is over (a line on its stdin) and return the JSON it
    prints last; it is killed if it fails to end."""
    try:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result
