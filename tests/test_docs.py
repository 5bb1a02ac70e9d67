"""The documentation: every public name has a docstring, the site builds strictly, reads
in a real browser (headless Chromium: home, a guide page, an API page, the search box),
its marked code blocks run, its metric tables name every metric the exporters publish,
and the README stays a front page whose commands and links exist."""

from __future__ import annotations

import functools
import http.server
import importlib
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SCREENSHOTS = ROOT / "build" / "docs-screenshots"

# The public modules: the pool, its asyncio twin, every drop-in, the extras.
PUBLIC_MODULES = [
    "fastpool", "fastpool.aio", "fastpool.dbutils", "fastpool.sqlalchemy", "fastpool.psycopg",
    "fastpool.aiomysql", "fastpool.asyncpg", "fastpool.deadlines", "fastpool.django",
    "fastpool.exporters.opentelemetry", "fastpool.exporters.prometheus",
    "fastpool.multihost.pool", "fastpool.aio.multihost",
]


def _public_names(module: Any) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return [n for n in names if not n.startswith("__")]


def _documented_attributes(cls: type) -> set[str]:
    """The names a class docstring's Google-style ``Attributes:`` section defines."""
    doc = inspect.getdoc(cls) or ""
    found: set[str] = set()
    section = re.search(r"^Attributes:\n((?:[ \t]+.*\n?|\n)*)", doc, re.M)
    if section:
        found.update(re.findall(r"^[ \t]{4}(\w+)(?: \([^)]*\))?:", section.group(1), re.M))
    return found


def _undocumented(module_name: str) -> Iterator[str]:
    module = importlib.import_module(module_name)
    if not (module.__doc__ or "").strip():
        yield module_name
    for name in _public_names(module):
        obj = getattr(module, name)
        if inspect.ismodule(obj) or not (inspect.isclass(obj) or callable(obj)):
            continue
        if not getattr(obj, "__module__", "").startswith("fastpool"):
            continue  # a re-export of the original's own name (DBUtils' exceptions, ...)
        where = f"{module_name}.{name}"
        if not (inspect.getdoc(obj) or "").strip():
            yield where
        if not inspect.isclass(obj):
            continue
        attributes = _documented_attributes(obj)
        fields = getattr(obj, "__dataclass_fields__", {})
        for attr, value in vars(obj).items():
            if attr.startswith("_"):
                continue
            if attr in fields or type(value).__name__ in ("member_descriptor", "getset_descriptor"):
                # A data attribute: defined in the class docstring's Attributes section
                # (where help() and the API page show it), or by a docstring of its own.
                if attr not in attributes and not (getattr(value, "__doc__", None) or "").strip():
                    yield f"{where}.{attr} (data: add it to the class's Attributes section)"
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if callable(value) or isinstance(value, property):
                if not (getattr(value, "__doc__", None) or "").strip():
                    yield f"{where}.{attr}"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    pytest.importorskip(module_name)
    missing = list(_undocumented(module_name))
    assert not missing, "public names without a docstring:\n  " + "\n  ".join(missing)


def test_the_docstring_check_catches_a_missing_docstring() -> None:
    # The check must be able to fail: a module with an undocumented class, method and field.
    import types

    mod = types.ModuleType("fastpool._docs_probe", "A probe.")

    class Probe:
        """Documented.

        Attributes:
            known: documented here.
        """

        __slots__ = ("known", "unknown")

        def method(self) -> None:
            pass

    Probe.__module__ = mod.__name__
    mod.Probe = Probe  # type: ignore[attr-defined]
    mod.__all__ = ["Probe"]  # type: ignore[attr-defined]
    sys.modules[mod.__name__] = mod
    try:
        found = sorted(_undocumented(mod.__name__))
    finally:
        del sys.modules[mod.__name__]
    assert found == ["fastpool._docs_probe.Probe.method",
                     "fastpool._docs_probe.Probe.unknown (data: add it to the class's Attributes section)"]


# ---- code blocks -------------------------------------------------------------------
RUN_MARK = "<!-- docs-test: run -->"


def _marked_blocks() -> list[tuple[str, int, str]]:
    blocks = []
    for page in sorted(DOCS.rglob("*.md")):
        lines = page.read_text().split("\n")
        for i, line in enumerate(lines):
            if line.strip() != RUN_MARK:
                continue
            assert lines[i + 1].startswith("```python"), f"{page}:{i + 1}: the mark must precede a python block"
            end = lines.index("```", i + 2)
            blocks.append((str(page.relative_to(ROOT)), i + 2, "\n".join(lines[i + 2:end])))
    return blocks


def test_some_code_blocks_are_marked_to_run() -> None:
    pages = {page for page, _, _ in _marked_blocks()}
    assert "docs/getting-started.md" in pages


@pytest.mark.parametrize("page,line,code", _marked_blocks(), ids=lambda v: str(v)[:40])
def test_a_marked_code_block_runs(page: str, line: int, code: str, tmp_path: Path) -> None:
    if "fastpool.aio" in code:
        pytest.importorskip("aiosqlite")
        pytest.importorskip("greenlet")
    script = tmp_path / "block.py"
    script.write_text(code + "\n")
    res = subprocess.run([sys.executable, "-W", "error", str(script)], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, f"{page}:{line} failed:\n{res.stderr}"
    assert res.stdout.strip(), f"{page}:{line} printed nothing"


# ---- the operations page's metric tables ------------------------------------------
def test_the_operations_page_names_every_exported_metric() -> None:
    page = (DOCS / "operations" / "index.md").read_text()
    from fastpool.exporters import opentelemetry, prometheus

    names = [f"`{name}{{pool}}`" for name, _, _ in prometheus.GAUGES]
    names += [f"`{name}_total{{pool}}`" for name, _, _ in prometheus.COUNTERS]
    names.append("`fastpool_connections{pool,state}`")
    source = Path(opentelemetry.__file__).read_text()
    names += [f"`{n}`" for n in re.findall(r'(?:up_down|counter|histogram)\(\s*"([\w.]+)"', source)]
    assert len(names) > 30
    missing = [n for n in names if n not in page]
    assert not missing, f"metrics missing from docs/operations/index.md: {missing}"


# ---- the README, a front page ------------------------------------------------------
def test_the_readme_is_a_front_page_whose_commands_and_links_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    commands = set(re.findall(r"^(scripts/[\w-]+)", readme, re.M))
    assert {"scripts/compare", "scripts/test", "scripts/docs"} <= commands
    for command in commands:
        assert os.access(ROOT / command, os.X_OK), command
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", readme)
    assert len(links) >= 10
    for link in links:
        assert (ROOT / link).exists(), link


# ---- the site, built and read in a browser -----------------------------------------
def _build_site(site: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install 'fastpool[docs]')")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stdout}\n{res.stderr}"


_SITE_ROOT: list[Path] = []


def _needs_mermaid(path: str) -> None:
    # The build ships Mermaid when it could fetch it (mkdocs_hooks.py); offline it cannot,
    # and a page with a diagram then asks a CDN this machine cannot reach.
    if path == "design.html" and not (_SITE_ROOT[0] / "assets/javascripts/mermaid.min.js").exists():
        pytest.skip("Mermaid could not be fetched when the site was built (offline?)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site built strictly, served over HTTP on loopback (the search index is fetched,
    which a browser refuses from file://)."""
    root = tmp_path_factory.mktemp("site")
    _build_site(root)
    _SITE_ROOT[:] = [root]
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_site_builds_strictly(site: str) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{site}/reference/fastpool.html", timeout=10) as resp:
        page = resp.read().decode()
    # The reference is generated: the pool's methods and the options table are there.
    for needle in ("fastpool.Pool", "query_row", "max_idle_time", "fastpool.Stats", "wait_p99"):
        assert needle in page, needle


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/lib/chromium/chromedriver" if os.path.exists("/usr/lib/chromium/chromedriver") else None)
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    found = _chromium()
    if found is None:
        if os.environ.get("FASTPOOL_REQUIRE_BROWSER"):
            pytest.fail("FASTPOOL_REQUIRE_BROWSER is set but chromium/chromedriver are missing"
                        " (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium/chromedriver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver is Debian's: nothing is downloaded (Selenium Manager stays out of it).
    os.environ.setdefault("SE_OFFLINE", "true")
    try:
        driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    except Exception as exc:  # e.g. a chroot without /dev/shm
        if os.environ.get("FASTPOOL_REQUIRE_BROWSER"):
            raise
        pytest.skip(f"chromium did not start here: {type(exc).__name__}: {str(exc)[:200]}")
    driver.set_page_load_timeout(30)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


@pytest.mark.parametrize("path,expect", [
    ("index.html", "The bug it exists to end"),
    ("guide/queries.html", "query_row"),
    ("reference/fastpool.html", "PoolTimeout"),
    ("design.html", "putConnDBLocked"),
])
def test_a_page_reads_in_chromium_without_console_errors(site: str, browser: Any, path: str,
                                                         expect: str) -> None:
    from selenium.webdriver.common.by import By

    _needs_mermaid(path)
    browser.get(f"{site}/{path}")
    body = browser.find_element(By.TAG_NAME, "article").text
    assert expect in body
    assert browser.find_elements(By.CSS_SELECTOR, "nav.md-nav"), "no navigation rendered"
    name = path.replace("/", "_").replace(".html", ".png")
    browser.save_screenshot(str(SCREENSHOTS / name))
    assert not _console_errors(browser)


def test_the_design_page_renders_its_state_diagram(site: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _needs_mermaid("design.html")
    browser.get(f"{site}/design.html")
    # Material renders each mermaid block into an SVG inside a closed shadow root of its
    # div.mermaid: rendered, the div takes the diagram's height (empty, it has none). A
    # diagram Mermaid cannot parse is a console error (checked below).
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script(
            "const ms = document.querySelectorAll('div.mermaid');"
            " return ms.length >= 2 && Array.from(ms).every(m => m.getBoundingClientRect().height > 100);"))
    browser.save_screenshot(str(SCREENSHOTS / "design_diagram.png"))
    assert not _console_errors(browser)


def test_the_search_box_finds_pooltimeout(site: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{site}/index.html")
    box = browser.find_element(By.CSS_SELECTOR, "input.md-search__input")
    if not box.is_displayed():  # a narrow window shows only the search icon
        browser.find_element(By.CSS_SELECTOR, "label.md-search__icon").click()
    WebDriverWait(browser, 10).until(lambda d: box.is_displayed() and box.is_enabled())
    box.click()
    box.send_keys("PoolTimeout")

    def results(d: Any) -> list[Any]:
        found = d.find_elements(By.CSS_SELECTOR, ".md-search-result__item")
        return found if found and "PoolTimeout" in d.find_element(By.CSS_SELECTOR, ".md-search-result").text else []

    items = WebDriverWait(browser, 20).until(results)
    assert len(items) >= 1
    browser.save_screenshot(str(SCREENSHOTS / "search_pooltimeout.png"))
    assert not _console_errors(browser)


def test_the_comparison_rewrites_only_the_figures_block_of_the_benchmarks_page(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # python -m bench --update-docs: the block between the markers, and nothing else.
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))  # after site-packages: fastpool stays the installed one
    bench_main = importlib.import_module("bench.__main__")
    page = tmp_path / "benchmarks.md"
    original = (DOCS / "benchmarks.md").read_text()
    page.write_text(original)
    monkeypatch.setattr(bench_main, "BENCHMARKS_PAGE", page)
    bench_main.update_figures("fastpool comparison, a new run")
    before, _, rest = original.partition(bench_main.FIGURES_START)
    after = rest.partition(bench_main.FIGURES_END)[2]
    text = page.read_text()
    assert text.startswith(before) and text.endswith(after)
    assert text.count(bench_main.FIGURES_START) == 1
    assert "fastpool comparison, a new run" in text and "](comparison.png)" in text
