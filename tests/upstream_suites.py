"""The originals' own test suites, run against fastpool's drop-in adapters.

Each suite comes from the project's sdist on PyPI, downloaded at test time into a cache
(none of its code is committed), and runs in a pytest subprocess with a plugin that
points the original's module at fastpool's adapter. The outcome is compared with
`tests/upstream/expected-<package>-<version>.txt`: every test expected to fail is listed
there with its reason. A failure not on the list, or a listed test that now passes, is an
error: the list stays exact.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastpool-upstream"


@dataclass(frozen=True)
class Suite:
    package: str  # the PyPI name
    version: str
    files: tuple[str, ...]  # test files inside the sdist
    plugin: str  # module in tests/upstream that points the original at the adapter
    # Where the sdist keeps its package (SQLAlchemy: lib); None: not on the path at all
    # (a package that must be built: the installed one is tested).
    source: str | None = "."
    # Needs the throwaway MariaDB's root over its Unix socket (aiomysql's suite creates
    # its own databases); run by test_upstream.py with that server.
    server: bool = False
    # Extra pytest arguments; "{tmp}" is the run's temporary directory.
    args: tuple[str, ...] = ()
    variant: str = ""  # tells apart two suites of one sdist (their expected-failure lists)

    @property
    def name(self) -> str:
        return f"{self.package}-{self.version}" + (f"-{self.variant}" if self.variant else "")

    @property
    def expected_file(self) -> Path:
        return HERE / "upstream" / f"expected-{self.name}.txt"


# The newest release and the oldest one the extras allow.
SUITES = [
    Suite("DBUtils", "3.2.0", ("tests/test_pooled_db.py",), "alias_dbutils"),
    Suite("DBUtils", "3.0.0", ("tests/test_pooled_db.py",), "alias_dbutils"),
    Suite("SQLAlchemy", "2.1.9", ("test/engine/test_pool.py",), "alias_sqlalchemy", "lib"),
    Suite("SQLAlchemy", "2.0.0", ("test/engine/test_pool.py",), "alias_sqlalchemy", "lib"),
    # SQLAlchemy's asyncio engine tests with FastAsyncQueuePool as AsyncAdaptedQueuePool,
    # on aiosqlite (a file database: its dialect's default pool is the queue pool).
    Suite("SQLAlchemy", "2.1.9", ("test/ext/asyncio/test_engine.py",
                                  "test/ext/asyncio/test_cancellation.py"),
          "alias_sqlalchemy_async", "lib",
          args=("--dburi", "sqlite+aiosqlite:///{tmp}/sa-async.db"), variant="asyncio"),
    # aiomysql's pool tests against fastpool.aiomysql, under asyncio and uvloop.
    Suite("aiomysql", "0.3.2", ("tests/test_pool.py",), "alias_aiomysql", server=True),
    # asyncpg's pool tests against fastpool.asyncpg, on the throwaway PostgreSQL's
    # superuser (PG* variables). The sdist's package is not built: the installed asyncpg
    # runs, so the sdist's root must not come first on the path (source=None, -P, and
    # pytest's "append" import mode for its tests/ package).
    Suite("asyncpg", "0.32.0", ("tests/test_pool.py",), "alias_asyncpg", source=None,
          server=True, args=("--import-mode=append",)),
]


def fetch(suite: Suite) -> Path:
    """The unpacked sdist (downloaded once, then cached)."""
    target = CACHE / f"{suite.package}-{suite.version}"
    if (target / "PKG-INFO").exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             # The sdist of this package only: ":all:" would also build its build
             # dependencies (Cython) from source, minutes of compiling.
             "--no-deps", "--no-binary", suite.package, f"{suite.package}=={suite.version}",
             "-d", tmp],
            check=True, capture_output=True, text=True, timeout=300,
        )
        (archive,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            _extract(tar, tmp)
        (unpacked,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(unpacked), target)
    return target


def _extract(tar: tarfile.TarFile, dest: str) -> None:
    # The "data" filter (no absolute paths, no escapes, no device files) where tarfile has
    # it (3.11.4+; Debian bookworm's 3.11.2 has not); before that, the same checks by hand.
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = Path(dest).resolve()
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        if not (member.isfile() or member.isdir()) or root not in (target, *target.parents):
            raise RuntimeError(f"refusing to extract {member.name!r} from {tar.name}")
    tar.extractall(dest)  # noqa: S202 - every member checked above


def run(suite: Suite, extra_args: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """Run the suite; return {test id: "passed" | "skipped" | "failed: <message>"}."""
    src = fetch(suite)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        env = dict(os.environ)
        # The sdist's own package first, then fastpool (this checkout), then the plugin.
        import fastpool  # the one this process tests: a checkout or an installed wheel

        env["PYTHONPATH"] = os.pathsep.join(
            ([] if suite.source is None else [str(src / suite.source)])
            + [str(Path(fastpool.__file__).resolve().parent.parent), str(HERE / "upstream")])
        env["FASTPOOL_UPSTREAM_SDIST"] = str(src)
        env.update(extra_env or {})
        isolated = ["-P"] if suite.source is None else []  # the sdist's root is the cwd
        proc = subprocess.run(
            [sys.executable, *isolated, "-m", "pytest", *suite.files, "-p", suite.plugin, "-q",
             "-p", "no:cacheprovider", "-o", "addopts=", "-W", "ignore::DeprecationWarning",
             # A hung test must not hang the run (the suites set no timeout themselves).
             "-o", "timeout=60", f"--junitxml={report}", "--rootdir", str(src),
             *(a.format(tmp=tmp) for a in suite.args), *extra_args],
            cwd=src, env=env, capture_output=True, text=True, timeout=600,
        )
        if not report.exists():
            raise RuntimeError(f"{suite.name}: the suite did not run:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        return _outcomes(report)


def _outcomes(report: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        # SQLAlchemy names its test classes after the database's version
        # (AsyncEngineTest_sqlite+aiosqlite_async_3_40_1): the list must not depend on it.
        test_id = _VERSION_SUFFIX.sub("", test_id)
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is not None:
            out[test_id] = "failed: " + (failure.get("message") or "").splitlines()[0][:200] \
                if failure.get("message") else "failed"
        elif case.find("skipped") is not None:
            out[test_id] = "skipped"
        else:
            out[test_id] = "passed"
    return out


_LINE = re.compile(r"^(\S+)\s+#\s*(.+)$")
_VERSION_SUFFIX = re.compile(r"_\d+_\d+_\d+(?=::)")


def expected(suite: Suite) -> dict[str, str]:
    """{test id: reason} from the suite's list (lines `test_id  # reason`)."""
    return expected_in(suite.expected_file)


def expected_in(path: Path) -> dict[str, str]:
    """{test id: reason} from a list of expected failures, {} if there is none."""
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            raise ValueError(f"{path.name}: a line needs `test_id  # reason`: {line!r}")
        out[m.group(1)] = m.group(2)
    return out


def fetch_or_skip(suite: Suite) -> Path:
    """fetch(suite); without PyPI the test is skipped, unless FASTPOOL_REQUIRE_UPSTREAM is
    set (as in CI), where a missing suite is a failure."""
    import pytest

    try:
        return fetch(suite)
    except (subprocess.SubprocessError, OSError) as exc:
        if os.environ.get("FASTPOOL_REQUIRE_UPSTREAM"):
            raise
        pytest.skip(f"could not download the {suite.name} sdist: {exc}")


def compare(outcomes: dict[str, str], allowed: dict[str, str]) -> tuple[list[str], list[str]]:
    """(failures not on the list, listed tests that did not fail)."""
    new = sorted(t for t, o in outcomes.items() if o.startswith("failed") and t not in allowed)
    stale = sorted(t for t in allowed if not outcomes.get(t, "").startswith("failed"))
    return new, stale


def counts(outcomes: dict[str, str]) -> dict[str, int]:
    c = {"passed": 0, "failed": 0, "skipped": 0}
    for o in outcomes.values():
        c["failed" if o.startswith("failed") else o] += 1
    return c


if __name__ == "__main__":  # python tests/upstream_suites.py: print the outcomes
    for s in SUITES:
        if s.server:
            continue  # needs a server: run through test_upstream.py
        res = run(s)
        print(s.name, counts(res))
        for t, o in sorted(res.items()):
            if o.startswith("failed"):
                print(f"  {t}  {o}")
