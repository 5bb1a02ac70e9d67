"""`mypy --strict` passes on the package and on a typed usage example (the stubs of the
compiled core included), and the example runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_mypy_strict_on_the_package_and_a_typed_example():
    pytest.importorskip("mypy", reason="mypy is not installed")
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "fastpool",
         "examples/typed_usage.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Success" in res.stdout


def test_typed_example_runs():
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "typed_usage.py")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "['ada'] 1" in res.stdout
