"""Build the compiled core (fastpool._core), fastpool.aio's bridge (fastpool._bridge) and
fastpool.asyncpg's hot path (fastpool._asyncpg) from src_c/.

All Cython compiler directives live here, in one place. Set FASTPOOL_DEBUG=1 for a
debug build: line tracing (coverage/profilers see the .pyx lines), bounds checks and
C asserts left in.

The Project-URLs are not written down anywhere: they are read from the repository being
built (see project_urls), so the metadata never names an address that is not real.
"""
from __future__ import annotations

import email.parser
import os
import re
import subprocess
from collections.abc import Mapping

DEBUG = os.environ.get("FASTPOOL_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    # No signature line in the docstrings: the compiled functions give inspect.signature()
    # their own (binding=True, Cython 3's default), which help() and the API reference read.
    "embedsignature": False,
    # The core guards its own state with a C-level lock; it never relies on the GIL.
    "freethreading_compatible": True,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "linetrace": DEBUG,
    "profile": False,
}

macros = []
compile_args = []
if DEBUG:
    macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1"), ("FASTPOOL_DEBUG", "1")]
    compile_args += ["-O0", "-g", "-UNDEBUG"] if os.name != "nt" else []


# git@host:owner/name(.git), ssh://git@host[:port]/owner/name(.git), https://host/owner/name(.git)
_REMOTE = re.compile(
    r"^(?:git@(?P<scp_host>[^:/]+):|(?:ssh|https?)://(?:[^@/]+@)?(?P<host>[^:/]+)(?::\d+)?/)"
    r"(?P<path>[^\s]+?)(?:\.git)?/?$"
)
# Hosts known to serve an issue tracker at <repository>/issues.
_ISSUES_AT_SLASH_ISSUES = {"github.com", "gitlab.com", "codeberg.org"}
# Hosts that render the documentation's Markdown (docs/, the site's source) in place, and
# where: the default branch's docs/index.md.
_DOCS_AT = {"github.com": "{repo}/blob/HEAD/docs/index.md", "gitlab.com": "{repo}/-/blob/HEAD/docs/index.md"}


def repository_url_from_remote(remote: str) -> str | None:
    """The https address of a repository, from a git remote in any usual form; None when
    the remote is not a network address (a local path, say)."""
    m = _REMOTE.match(remote.strip())
    if m is None:
        return None
    host = m.group("scp_host") or m.group("host")
    return f"https://{host}/{m.group('path')}"


def urls_for_repository(repo: str) -> dict[str, str]:
    urls = {"Homepage": repo, "Source": repo}
    host = repo.split("/")[2]
    if host in _DOCS_AT:
        urls["Documentation"] = _DOCS_AT[host].format(repo=repo)
    if host in _ISSUES_AT_SLASH_ISSUES:
        urls["Issues"] = f"{repo}/issues"
    return urls


def project_urls(root: str, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Project-URLs for the metadata, from the first of these that is known:

    1. FASTPOOL_REPOSITORY_URL (an explicit override);
    2. the PKG-INFO of the sdist being built (a wheel built from an sdist has no .git, so
       it takes the sdist's URLs as they were);
    3. GitHub Actions' GITHUB_SERVER_URL and GITHUB_REPOSITORY;
    4. the git remote "origin" of the checkout.

    Empty when none is: a clone with no remote publishes no address rather than a made-up one.
    """
    explicit = env.get("FASTPOOL_REPOSITORY_URL")
    if explicit:
        repo = repository_url_from_remote(explicit)
        if repo is None:
            raise SystemExit(
                # The value is not echoed: a remote address may carry a token.
                "FASTPOOL_REPOSITORY_URL is not a repository address; expected one such as "
                "https://host/owner/name or git@host:owner/name.git"
            )
        return urls_for_repository(repo)
    pkg_info = os.path.join(root, "PKG-INFO")
    if os.path.exists(pkg_info):
        with open(pkg_info, encoding="utf-8") as f:
            headers = email.parser.Parser().parse(f, headersonly=True)
        found = {}
        for value in headers.get_all("Project-URL", []):  # "Label, https://..."
            label, _, url = value.partition(",")
            found[label.strip()] = url.strip()
        if found:
            return found
    if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY"):
        remote = f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}"
    elif os.path.exists(os.path.join(root, ".git")):
        try:
            remote = subprocess.run(
                ["git", "-C", root, "remote", "get-url", "origin"],
                capture_output=True, text=True, check=True, timeout=10,
            ).stdout
        except (OSError, subprocess.SubprocessError):  # no git, or no origin
            return {}
    else:
        # Not a checkout (an unpacked sdist, say). Asking git here would find the remote
        # of whatever repository happens to enclose this directory.
        return {}
    repo = repository_url_from_remote(remote)
    return urls_for_repository(repo) if repo else {}


def _extensions() -> list:
    from Cython.Build import cythonize
    from setuptools import Extension

    extensions = [
        Extension(
            "fastpool._core",
            sources=["src_c/fastpool/_core.pyx"],
            include_dirs=["src_c/fastpool"],
            define_macros=macros,
            extra_compile_args=compile_args,
            depends=["src_c/fastpool/_core.pxd", "src_c/fastpool/fp_sys.h"],
        ),
        # fastpool.aio's bridge: the per-statement steps of a task through the core.
        Extension(
            "fastpool._bridge",
            sources=["src_c/fastpool/_bridge.pyx"],
            define_macros=macros,
            extra_compile_args=compile_args,
        ),
        # fastpool.asyncpg's per-statement steps: a pool-level statement, the clean check.
        Extension(
            "fastpool._asyncpg",
            sources=["src_c/fastpool/_asyncpg.pyx"],
            define_macros=macros,
            extra_compile_args=compile_args,
        ),
    ]
    return cythonize(
        extensions,
        compiler_directives=directives,
        include_path=["src_c"],
        force=DEBUG,
    )


# Build back-ends run this file as __main__; the tests import it for project_urls().
if __name__ == "__main__":
    from setuptools import setup

    setup(
        ext_modules=_extensions(),
        project_urls=project_urls(os.path.dirname(os.path.abspath(__file__))),
    )
