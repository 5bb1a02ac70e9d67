"""scripts/setup.sh, the first-run set-up of scripts/test and scripts/compare: what it asks
of a user who is not root, on a PATH that lacks the tools (issue 14)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run_setup(tmp_path: Path, mode: str, tools: list[str]) -> subprocess.CompletedProcess[str]:
    """fp_install_packages as a non-root user whose PATH holds only python3 and `tools`."""
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "python3").symlink_to(sys.executable)
    for tool in ["cat", "sha256sum", "cut", "printf", *tools]:
        found = shutil.which(tool)
        if found:
            (fakebin / tool).symlink_to(found)
    script = (
        f'FP_SCRIPT=scripts/test; . "{ROOT}/scripts/setup.sh"; '
        'id() { echo 1000; }; '                       # not root
        f'PATH="{fakebin}"; fp_install_packages python3 {mode}; echo "went on"'
    )
    return subprocess.run([shutil.which("bash") or "bash", "-c", script], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PATH": str(fakebin)})


def test_a_user_without_root_gets_the_exact_apt_get_line(tmp_path):
    res = run_setup(tmp_path, "need", tools=[])
    assert res.returncode == 1, res.stdout + res.stderr
    line = next(ln for ln in res.stderr.splitlines() if "apt-get install" in ln).strip()
    assert line.startswith("sudo apt-get install -y ")
    wanted = set(line.split()[4:])
    assert {"gcc", "libc6-dev", "pkg-config", "libmariadb-dev"} <= wanted
    if "\nID=debian\n" in "\n" + Path("/etc/os-release").read_text() + "\n":
        assert "chromium" in wanted  # the documentation's browser test (its driver is
        # found outside PATH too, in /usr/lib/chromium, where Debian puts it)
    assert "went on" not in res.stdout


def test_the_comparison_goes_on_on_sqlite_without_the_mariadb_parts(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler here")
    res = run_setup(tmp_path, "want", tools=[Path(cc).name])
    assert res.returncode == 0, res.stderr
    assert "went on" in res.stdout
    assert "runs on SQLite" in res.stderr and "sudo apt-get install -y" in res.stderr
