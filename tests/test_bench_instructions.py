"""bench.instructions, the callgrind-counted comparison: its workloads do what they claim,
and its report gives each group's ratios to the group's first workload."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

sys.path.append(str(Path(__file__).parent.parent))  # after site-packages: fastpool stays the installed one

from bench.instructions import _DSN_ENV, ROWS, WORKLOADS, count_instructions, main, report  # noqa: E402


def _check(name: str, result: object) -> None:
    if name.startswith("rows_"):
        assert result == ROWS
    elif name.startswith(("select1_", "aio_select1_", "aio_64_")):
        if "asyncpg" in name and isinstance(result, int):
            assert result == 1  # fetchval: the value itself
        else:
            assert tuple(result) == (1,)  # type: ignore[arg-type]


def _run_workload(name: str) -> None:
    w = WORKLOADS[name]
    if not w.aio:
        op, close = w.setup()
        try:
            _check(name, op())
            op()  # and again: the pool (or cursor) is back in the state it started from
        finally:
            close()
        return

    async def main() -> None:
        op, close = await w.setup()
        try:
            _check(name, await op())
            await op()
        finally:
            await close()

    asyncio.run(main())


@pytest.mark.parametrize("name", [n for n in WORKLOADS if WORKLOADS[n].server is None])
def test_each_workload_does_the_work_it_is_named_for(name: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the SQLite file: removed after
    _run_workload(name)


def _on_server(name: str, server: Any, needs: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip(needs)
    monkeypatch.setenv(_DSN_ENV[WORKLOADS[name].server], server.dsn)  # type: ignore[index]
    _run_workload(name)


@pytest.mark.parametrize("name", [n for n in WORKLOADS if WORKLOADS[n].server == "mysql"])
def test_each_mariadb_workload_does_the_work_it_is_named_for(name, mariadb, monkeypatch):  # type: ignore[no-untyped-def]
    _on_server(name, mariadb, "asyncmy", monkeypatch)


@pytest.mark.parametrize("name", [n for n in WORKLOADS if WORKLOADS[n].server == "postgres"])
def test_each_postgresql_workload_does_the_work_it_is_named_for(name, postgres, monkeypatch):  # type: ignore[no-untyped-def]
    _on_server(name, postgres, "psycopg_pool", monkeypatch)


def test_report_gives_ratios_to_each_groups_first_workload() -> None:
    counts = {"lifoqueue_get_put": 15_000.0, "fastpool_with_conn": 3_000.0,
              "rows_raw_cursor": 600_000_000.0, "rows_fastpool_streaming": 612_000_000.0}
    lines = report(counts).splitlines()
    line = next(ln for ln in lines if "fastpool_with_conn" in ln)
    assert line.split()[-2:] == ["3,000", "0.20x"]
    line = next(ln for ln in lines if "rows_fastpool_streaming" in ln)
    assert line.split()[-2:] == ["612,000,000", "1.02x"]
    assert not any("select1" in ln for ln in lines), "workloads not counted are not reported"


def test_a_group_without_its_reference_gives_counts_without_ratios() -> None:
    lines = report({"fastpool_with_conn": 3_000.0}).splitlines()
    line = next(ln for ln in lines if "fastpool_with_conn" in ln)
    assert line.split()[-1] == "3,000"


def test_an_unknown_workload_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["no_such_workload"])
    assert raised.value.code == 2
    assert "unknown workload no_such_workload" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_callgrind_counts_grow_with_the_repetitions() -> None:
    valgrind = shutil.which("valgrind")
    assert valgrind is not None
    few = count_instructions("lifoqueue_get_put", 100, valgrind)
    many = count_instructions("lifoqueue_get_put", 1_100, valgrind)
    # A LifoQueue get+put is thousands of instructions; start-up is the same in both runs.
    assert 1_000_000 < many - few < 100_000_000
