"""Django's own test suite (from the Django sdist, downloaded at test time like the other
originals' suites) on fastpool's backends and on Django's stock ones, in the same run.

`runtests.py` runs the apps below once with the stock backend and once with fastpool's,
against the same database; the two must agree on how many tests ran and were skipped, and
fastpool's may fail only where the stock one does or where
`tests/upstream/expected-Django-<version>-<engine>.txt` lists the test with its reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from upstream_suites import HERE, Suite, expected_in, fetch

import fastpool

# The version the test extra installs on this Python (Django 5.2 is the LTS; 6.x needs
# Python 3.12).
DJANGO = Suite("Django", "5.2.19", ("tests/runtests.py",), "")
APPS = ("backends", "transactions", "transaction_hooks", "basic", "queries",
        "select_for_update", "model_fields", "test_utils")

SETTINGS = '''
import os
ENGINE = os.environ["FP_DJ_ENGINE"]
KIND = os.environ["FP_DJ_KIND"]
# The stock and fastpool runs go at once on the same server: test databases of their own.
TAG = "fp" if ENGINE.startswith("fastpool.") else "dj"
def db(name):
    opts = {"pool": {"max_open": 4}} if ENGINE.startswith("fastpool.") else {}
    if KIND == "sqlite":
        d = os.environ["FP_DJ_DIR"]
        return {"ENGINE": ENGINE, "NAME": f"{d}/{name}.db", "OPTIONS": opts,
                "TEST": {"NAME": f"{d}/test_{name}.db"}}
    from fastpool.url import parse_url
    kw = parse_url(os.environ["FP_DJ_DSN"]).connect_kwargs
    if KIND == "postgresql":
        return {"ENGINE": ENGINE, "NAME": kw["dbname"], "USER": kw["user"],
                "PASSWORD": kw["password"], "HOST": kw["host"], "PORT": kw["port"],
                "OPTIONS": opts, "TEST": {"NAME": f"test_{TAG}_{name}"}}
    opts["charset"] = "utf8mb4"
    return {"ENGINE": ENGINE, "NAME": name, "USER": kw["user"], "PASSWORD": kw["password"],
            "HOST": kw["host"], "PORT": kw["port"], "OPTIONS": opts,
            "TEST": {"NAME": f"test_{TAG}_{name}", "CHARSET": "utf8mb4"}}
DATABASES = {"default": db("dj_default"), "other": db("dj_other")}
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
'''

_HEADER = re.compile(r"^(ERROR|FAIL): (\w+) \(([\w.]+)\)", re.MULTILINE)


@dataclass
class Outcome:
    ran: int
    skipped: int
    failing: set[str]  # "module.Class.test" of every ERROR / FAIL
    tail: str


def run(engine: str, kind: str, dsn: str | None = None) -> Outcome:
    src = fetch(DJANGO)
    with tempfile.TemporaryDirectory(prefix="fastpool-django-suite-") as tmp:
        (Path(tmp) / "fp_settings.py").write_text(SETTINGS)
        env = {**os.environ, "FP_DJ_ENGINE": engine, "FP_DJ_KIND": kind, "FP_DJ_DIR": tmp,
               "FP_DJ_DSN": dsn or "",
               # The settings, then fastpool (the one this process tests), then Django's tests.
               "PYTHONPATH": os.pathsep.join(
                   [tmp, str(Path(fastpool.__file__).resolve().parent.parent)])}
        proc = subprocess.run(
            [sys.executable, "runtests.py", "--settings=fp_settings", "--parallel", "1",
             "--noinput", "-v", "1", *APPS],
            cwd=src / "tests", env=env, capture_output=True, text=True, timeout=900,
        )
    out = proc.stdout + proc.stderr
    ran = re.search(r"^Ran (\d+) tests", out, re.MULTILINE)
    if ran is None:
        raise RuntimeError(f"Django's suite did not run ({engine}):\n{out[-3000:]}")
    skipped = re.search(r"skipped=(\d+)", out.rsplit("Ran ", 1)[-1])
    failing = {f"{cls}.{name}" if not cls.endswith(name) else cls
               for _kind, name, cls in _HEADER.findall(out)}
    return Outcome(int(ran.group(1)), int(skipped.group(1)) if skipped else 0, failing, out[-3000:])


def run_both(stock: str, ours: str, kind: str, dsn: str | None = None) -> tuple[Outcome, Outcome]:
    """run() of the stock backend and of fastpool's at the same time (two processes: the
    suites are long, and the machine has more than one core)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as ex:
        a = ex.submit(run, stock, kind, dsn)
        b = ex.submit(run, ours, kind, dsn)
        return a.result(), b.result()


def expected(engine: str) -> dict[str, str]:
    return expected_in(HERE / "upstream" / f"expected-{DJANGO.name}-{engine}.txt")
