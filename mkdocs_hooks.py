"""MkDocs hooks for the documentation site (mkdocs.yml: ``hooks``).

The site must work offline, as the browser test reads it on a machine with no general
internet: Material would load Mermaid (the design page's diagrams) from a CDN, so Mermaid
is fetched once, pinned and checked against its npm integrity hash, from the npm registry
into ``build/cache/`` (or taken from ``FASTPOOL_MERMAID_JS``, a local ``mermaid.min.js``)
and shipped with the site (``extra_javascript``; Material uses an already loaded
``mermaid`` instead of its CDN copy). Nothing of it is committed. Where it cannot be had,
the site is built without it (said on stderr) and Material's CDN copy is left to the
reader's browser.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

MERMAID_VERSION = "11.12.2"
MERMAID_TARBALL = f"https://registry.npmjs.org/mermaid/-/mermaid-{MERMAID_VERSION}.tgz"
MERMAID_SHA512 = "n34QPDPEKmaeCG4WDMGy0OT6PSyxKCfy2pJgShP+Qow2KLrvWjclwbc3yXfSIf4BanqWEhQEpngWwNp/XhZt6w=="
CACHE = Path(__file__).resolve().parent / "build" / "cache" / f"mermaid-{MERMAID_VERSION}"
SITE_PATH = "assets/javascripts/mermaid.min.js"  # as named in mkdocs.yml's extra_javascript


def _fetch_mermaid() -> Path:
    script = CACHE / "mermaid.min.js"
    if script.exists():
        return CACHE
    with urllib.request.urlopen(MERMAID_TARBALL, timeout=120) as resp:
        data = resp.read()
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != MERMAID_SHA512:
        raise RuntimeError(f"{MERMAID_TARBALL}: sha512 does not match the pinned integrity hash")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member, name in (("package/dist/mermaid.min.js", "mermaid.min.js"),
                             ("package/LICENSE", "LICENSE")):
            src = tar.extractfile(member)
            if src is None:
                raise RuntimeError(f"{MERMAID_TARBALL} has no {member}")
            (CACHE / (name + ".part")).write_bytes(src.read())
            (CACHE / (name + ".part")).replace(CACHE / name)
    return CACHE


_found: Path | None = None  # the mermaid.min.js to ship, once on_config found one


def on_config(config: Any, **kwargs: Any) -> Any:
    global _found
    local = os.environ.get("FASTPOOL_MERMAID_JS")
    try:
        _found = Path(local) if local else _fetch_mermaid() / "mermaid.min.js"
        if not _found.is_file():
            raise FileNotFoundError(str(_found))
    except Exception as exc:  # offline: build without it rather than not at all
        _found = None
        print(f"mkdocs_hooks: Mermaid {MERMAID_VERSION} could not be had ({type(exc).__name__}:"
              f" {exc}); the diagrams will load Material's CDN copy", file=sys.stderr)
        return config
    if SITE_PATH not in config["extra_javascript"]:
        config["extra_javascript"].append(SITE_PATH)
    return config


def on_post_build(config: Any, **kwargs: Any) -> None:
    if _found is None:
        return
    target = Path(config["site_dir"]) / SITE_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_found, target)
    licence = _found.with_name("LICENSE")
    if licence.is_file():
        shutil.copyfile(licence, target.with_name("mermaid.LICENSE.txt"))
