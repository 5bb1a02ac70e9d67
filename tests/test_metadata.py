"""The Project-URLs in the package metadata come from the repository being built
(setup.py's project_urls), never from an address written down by hand."""
from __future__ import annotations

import pathlib
import runpy
import shutil
import subprocess
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# run_path with a name other than __main__ defines the helpers without calling setup().
SETUP: dict[str, Any] = runpy.run_path(str(ROOT / "setup.py"), run_name="fastpool_setup")
project_urls = SETUP["project_urls"]
repository_url_from_remote = SETUP["repository_url_from_remote"]

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ("git@github.com:acme/fastpool.git", "https://github.com/acme/fastpool"),
        ("https://github.com/acme/fastpool.git\n", "https://github.com/acme/fastpool"),
        ("https://github.com/acme/fastpool/", "https://github.com/acme/fastpool"),
        ("ssh://git@git.example.org:2222/team/fastpool.git", "https://git.example.org/team/fastpool"),
        # Credentials in a remote never reach the metadata.
        ("https://ci:s3cret@gitlab.com/acme/fastpool.git", "https://gitlab.com/acme/fastpool"),
        ("/srv/git/fastpool.git", None),
        ("file:///srv/git/fastpool.git", None),
        ("", None),
    ],
)
def test_repository_url_from_remote(remote: str, expected: str | None) -> None:
    assert repository_url_from_remote(remote) == expected


def _git(cwd: pathlib.Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


@needs_git
def test_urls_come_from_the_origin_remote(tmp_path: pathlib.Path) -> None:
    _git(tmp_path, "init", "-q")
    assert project_urls(str(tmp_path), env={}) == {}, "no remote: no address is made up"
    _git(tmp_path, "remote", "add", "origin", "git@github.com:acme/fastpool.git")
    assert project_urls(str(tmp_path), env={}) == {
        "Homepage": "https://github.com/acme/fastpool",
        "Source": "https://github.com/acme/fastpool",
        "Documentation": "https://github.com/acme/fastpool/blob/HEAD/docs/index.md",
        "Issues": "https://github.com/acme/fastpool/issues",
    }


@needs_git
def test_an_unknown_host_gets_no_guessed_issue_tracker(tmp_path: pathlib.Path) -> None:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "remote", "add", "origin", "https://git.example.org/team/fastpool.git")
    assert project_urls(str(tmp_path), env={}) == {
        "Homepage": "https://git.example.org/team/fastpool",
        "Source": "https://git.example.org/team/fastpool",
    }


@needs_git
def test_a_directory_inside_another_checkout_does_not_borrow_its_remote(
    tmp_path: pathlib.Path,
) -> None:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "remote", "add", "origin", "git@github.com:someone/else.git")
    unpacked = tmp_path / "fastpool-0.1.0"
    unpacked.mkdir()
    assert project_urls(str(unpacked), env={}) == {}


def test_a_wheel_built_from_an_sdist_keeps_the_sdists_urls(tmp_path: pathlib.Path) -> None:
    (tmp_path / "PKG-INFO").write_text(
        "Metadata-Version: 2.4\n"
        "Name: fastpool\n"
        "Project-URL: Source, https://github.com/acme/fastpool\n"
        "Project-URL: Issues, https://github.com/acme/fastpool/issues\n"
        "\n"
        "long description, Project-URL: Not, a header\n",
        encoding="utf-8",
    )
    assert project_urls(str(tmp_path), env={}) == {
        "Source": "https://github.com/acme/fastpool",
        "Issues": "https://github.com/acme/fastpool/issues",
    }


def test_github_actions_names_the_repository(tmp_path: pathlib.Path) -> None:
    env = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/fastpool"}
    assert project_urls(str(tmp_path), env=env)["Source"] == "https://github.com/acme/fastpool"


def test_the_explicit_override_wins_and_is_checked(tmp_path: pathlib.Path) -> None:
    env = {
        "FASTPOOL_REPOSITORY_URL": "https://codeberg.org/acme/fastpool.git",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "other/repo",
    }
    assert project_urls(str(tmp_path), env=env)["Issues"] == "https://codeberg.org/acme/fastpool/issues"
    with pytest.raises(SystemExit, match="not a repository address") as raised:
        project_urls(str(tmp_path), env={"FASTPOOL_REPOSITORY_URL": "ci:tok3n@nowhere"})
    assert "tok3n" not in str(raised.value)
