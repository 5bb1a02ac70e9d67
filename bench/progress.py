"""A pytest plugin that shows the comparison's progress: one bar per suite (rich)."""

from __future__ import annotations

from typing import Any, TextIO

import pytest
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# What each suite in bench/ measures, in the order they run.
SUITES = {
    "test_adapters.py": "drop-in adapters (SQLAlchemy, DBUtils)",
    "test_checkout.py": "checkout + checkin, no I/O",
    "test_contended.py": "contended: 16 threads on 4 connections",
    "test_leak.py": "the leak: return inside `for row in rows`",
    "test_query.py": "SELECT 1 and the 100k-row read",
}


class ProgressPlugin:
    def __init__(self, stream: TextIO) -> None:
        self.console = Console(file=stream, stderr=True)
        self.progress = Progress(
            TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=self.console, transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.failed: list[str] = []

    @pytest.hookimpl
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        counts: dict[str, int] = {}
        for item in session.items:
            counts[self._suite(item.nodeid)] = counts.get(self._suite(item.nodeid), 0) + 1
        for suite, n in counts.items():
            self.tasks[suite] = self.progress.add_task(SUITES.get(suite, suite), total=n, start=False)
        self.progress.start()

    @pytest.hookimpl
    def pytest_runtest_logstart(self, nodeid: str) -> None:
        task = self.tasks.get(self._suite(nodeid))
        if task is not None and self.progress.tasks[task].start_time is None:
            self.progress.start_task(task)  # its clock runs from its first test

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.failed.append(report.nodeid)
        if report.when == "teardown":
            task = self.tasks.get(self._suite(report.nodeid))
            if task is not None:
                self.progress.advance(task)

    @pytest.hookimpl
    def pytest_sessionfinish(self) -> None:
        self.progress.stop()

    @staticmethod
    def _suite(nodeid: str) -> str:
        return nodeid.split("::")[0].rsplit("/", 1)[-1]
