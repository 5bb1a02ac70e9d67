"""The comparison's chart (PNG) and its self-contained HTML report.

Panels: the leak scenario as the calls go on (connections open, calls failed), the
no-I/O checkout and SELECT 1 as ratios to their reference, the contended run's throughput
and its latency tails, the 100k-row read, the scale runs, and the asyncio group (64 tasks'
throughput and tails, the cancellation storm), and with PostgreSQL its row (16 threads and
64 tasks on 4 connections, the fleet's server connections over time). fastpool's entries (fastpool, FastQueuePool,
fastpool.dbutils) are green; every peer has a colour and a marker of its own.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

FASTPOOL = "#1a9850"
# Peers, in a fixed order so one peer keeps its colour and marker across panels.
PEER_STYLES = [
    ("go_style", "#d73027", "X"), ("lifoqueue", "#d73027", "X"), ("queuepool", "#4575b4", "s"),
    ("sqlalchemy", "#4575b4", "s"), ("dbutils", "#fc8d59", "^"), ("deque", "#999999", "D"),
    ("raw", "#555555", "o"), ("asyncmy", "#984ea3", "P"), ("aiomysql", "#a65628", "*"),
    ("psycopg_pool", "#762a83", "h"),
]


def is_fastpool(name: str) -> bool:
    n = name.lower()
    return "fastpool" in n or "fastqueuepool" in n


def style(name: str) -> tuple[str, str]:
    """(colour, marker) of a contender."""
    if is_fastpool(name):
        return FASTPOOL, "o"
    n = name.lower()
    for key, colour, marker in PEER_STYLES:
        if key in n:
            return colour, marker
    return "#777777", "v"


def short(name: str, *prefixes: str) -> str:
    name = re.sub(r"^test_", "", name)
    for p in prefixes:
        name = name.replace(p, "")
    return name


def fmt_time(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def plot(data: dict[str, Any], path: Path, title: str, groups: dict[str, list[dict[str, Any]]],
         reference: dict[str, str], contended: str, leak_prefix: str,
         scale: dict[int, dict[str, dict[str, Any]]] | None = None,
         tasks: str = "", storm: str = "", postgres: tuple[str, str, str] = ("", "", ""),
         failover: str = "") -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        print("(matplotlib is not installed: no chart)")
        return False
    pg_contended, pg_tasks, pg_fleet = postgres
    with_pg = any(groups.get(g) for g in postgres)
    with_failover = bool(groups.get(failover))
    rows_n = 4 + with_pg + with_failover
    fig, axes = plt.subplots(rows_n, 3, figsize=(19, 5.1 * rows_n))
    leak = next((b for g, b in groups.items() if g.startswith(leak_prefix)), [])
    _leak_panel(axes[0][0], axes[0][1], leak)
    _ratio_panel(axes[0][2], groups, "checkout+checkin (no I/O)", reference,
                 "checkout + give-back, no I/O\n(x queue.LifoQueue; lower is better)")
    _throughput_panel(axes[1][0], groups.get(contended, []), FuncFormatter)
    _tails_panel(axes[1][1], groups.get(contended, []))
    select1 = next((g for g in groups if g.startswith("SELECT 1 per request")), None)
    rows = next((g for g in groups if g.startswith("iterate")), None)
    ax = axes[1][2]
    if select1 and rows:
        # Two ratio groups in one panel, one above the other, each to its own reference.
        _ratio_panel(ax, groups, select1, reference, "", rows_group=rows)
    elif select1:
        _ratio_panel(ax, groups, select1, reference, "SELECT 1 per request (x raw connection)")
    else:
        ax.set_axis_off()
    _scale_panels(axes[2], scale or {})
    # The asyncio group: 64 tasks on 4 connections, and the cancellation storm.
    _throughput_panel(axes[3][0], groups.get(tasks, []), FuncFormatter,
                      "asyncio: 64 tasks, 4 connections")
    _tails_panel(axes[3][1], groups.get(tasks, []), "asyncio, 64 tasks")
    _storm_panel(axes[3][2], groups.get(storm, []))
    if with_pg:
        # PostgreSQL: 16 threads and 64 tasks on 4 connections, and the fleet.
        _throughput_panel(axes[4][0], groups.get(pg_contended, []), FuncFormatter,
                          "PostgreSQL: 16 threads, 4 connections")
        _throughput_panel(axes[4][1], groups.get(pg_tasks, []), FuncFormatter,
                          "PostgreSQL asyncio: 64 tasks, 4 connections")
        _fleet_panel(axes[4][2], groups.get(pg_fleet, []))
    if with_failover:
        _failover_panels(axes[rows_n - 1], groups[failover])
    fig.suptitle(title, fontsize=14)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _leak_panel(ax_open: Any, ax_failed: Any, benches: list[dict[str, Any]]) -> None:
    from matplotlib.ticker import MaxNLocator

    series = [(b, b["extra_info"].get("series")) for b in benches]
    series = [(b, s) for b, s in series if s]
    if not series:
        ax_open.set_axis_off()
        ax_failed.set_axis_off()
        return
    for i, (b, s) in enumerate(series):
        name = short(b["name"], "leak_")
        colour, marker = style(name)
        calls = [p[0] for p in s]
        ls = "-" if is_fastpool(name) else "--"
        # Lines that coincide (two pools both at 4 open) stay apart by their staggered markers.
        every = (i % 5, 5)
        ax_open.plot(calls, [p[1] for p in s], ls, color=colour, marker=marker, markevery=every,
                     label=name, ms=7)
        ax_failed.plot(calls, [p[2] for p in s], ls, color=colour, marker=marker,
                       markevery=every, label=name, ms=7)
        ax_open.annotate(f"{s[-1][1]}", (calls[-1], s[-1][1]), textcoords="offset points",
                         xytext=(4, 0), va="center", fontsize=9, color=colour)
        ax_failed.annotate(f"{s[-1][2]}", (calls[-1], s[-1][2]), textcoords="offset points",
                           xytext=(4, 0), va="center", fontsize=9, color=colour)
    ax_open.set_title("the leak: `return` inside `for row in rows`\nconnections open as the calls go on")
    ax_failed.set_title("the leak: calls that found no connection\n(the 504s; lower is better)")
    for ax in (ax_open, ax_failed):
        ax.set_xlabel("calls")
        ax.grid(alpha=0.3)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(x=0.1, y=0.1)
    ax_open.legend(fontsize=9, loc="center right")
    ax_failed.legend(fontsize=9, loc="upper left")


def _ratio_panel(ax: Any, groups: dict[str, list[dict[str, Any]]], group: str,
                 reference: dict[str, str], title: str, rows_group: str | None = None) -> None:
    labels: list[str] = []
    values: list[float] = []
    texts: list[str] = []
    colours: list[str] = []
    for g in ([group, rows_group] if rows_group else [group]):
        benches = groups.get(g, [])
        ref = next((b for b in benches if b["name"] == _ref_name(g, reference)), None)
        if ref is None:
            continue
        for b in sorted(benches, key=lambda b: b["stats"]["median"]):
            name = short(b["name"], "select1_", "rows_")
            ratio = b["stats"]["median"] / ref["stats"]["median"]
            prefix = "SELECT 1: " if rows_group and g == group else ("100k rows: " if rows_group else "")
            labels.append(prefix + name)
            values.append(ratio)
            texts.append(f"{ratio:.2f}x  ({fmt_time(b['stats']['median'])})")
            colours.append(style(name)[0])
    if not values:
        ax.set_axis_off()
        return
    bars = ax.barh(labels, values, color=colours)
    ax.bar_label(bars, texts, padding=3, fontsize=8)
    ax.axvline(1.0, color="#333333", lw=0.8, ls=":")
    ax.invert_yaxis()
    ax.set_xlim(0, max(values) * 1.45)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title(title or "SELECT 1 per request and the 100k-row read\n"
                          "(x a raw connection / cursor; lower is better)")


def _ref_name(group: str, reference: dict[str, str]) -> str:
    for key, name in reference.items():
        if group.startswith(key):
            return name
    return ""


def _contended(ax: Any, benches: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The contended run's entries, fastest first, and their names; none: the panel is off."""
    benches = sorted([b for b in benches if b["extra_info"]],
                     key=lambda b: -b["extra_info"]["requests_per_s"])
    if not benches:
        ax.set_axis_off()
    return benches, [short(b["name"], "contended_") for b in benches]


def _throughput_panel(ax: Any, benches: list[dict[str, Any]], formatter: Any,
                      title: str = "contended throughput: 16 threads, 4 connections") -> None:
    benches, names = _contended(ax, benches)
    if not benches:
        return
    rps = [b["extra_info"]["requests_per_s"] for b in benches]
    bars = ax.barh(names, rps, color=[style(n)[0] for n in names])
    ax.bar_label(bars, [f"{v:,.0f}" for v in rps], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(rps) * 1.25)
    ax.xaxis.set_major_formatter(formatter(lambda v, _p: f"{v / 1000:.0f}k"))
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title(f"{title}\n(requests/s; higher is better)")


def _tails_panel(ax: Any, benches: list[dict[str, Any]], title: str = "contended latency") -> None:
    benches, names = _contended(ax, benches)
    if not benches:
        return
    y = list(range(len(names)))
    for key, label, marker in (("p50_ms", "p50", "o"), ("p99_ms", "p99", "s"),
                               ("max_ms", "longest", "X")):
        ax.scatter([b["extra_info"][key] for b in benches], y, marker=marker, label=label,
                   color=["#1a9850" if is_fastpool(n) else "#777777" for n in names],
                   edgecolors="black", linewidths=0.4, s=45, zorder=3)
    for i, b in enumerate(benches):
        ax.annotate(f"{b['extra_info']['max_ms']:.1f} ms", (b["extra_info"]["max_ms"], i),
                    textcoords="offset points", xytext=(6, 0), va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms (log scale)")
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.25)
    ax.set_title(f"{title}: p50, p99, longest\n(lower is better; a longest far right"
                 " is a caller starved)")
    ax.legend(loc="lower right", fontsize=8)


def _storm_panel(ax: Any, benches: list[dict[str, Any]]) -> None:
    """Statements still running on the server one second after their tasks were cancelled."""
    benches = [b for b in benches if "left_running" in b["extra_info"]]
    if not benches:
        ax.set_axis_off()
        return
    names = [short(b["name"], "async_cancel_storm").strip("[]") for b in benches]
    left = [b["extra_info"]["left_running"] for b in benches]
    bars = ax.barh(names, left, color=[style(n)[0] for n in names])
    ax.bar_label(bars, [f"{v} of 8" for v in left], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 10)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title("asyncio: 64 tasks cancelled in SLEEP(2), pool of 8\n"
                 "statements left running on the server 1 s later\n(lower is better)")


def _fleet_panel(ax: Any, benches: list[dict[str, Any]]) -> None:
    """The server's client connections over the fleet run, directly and through PgBouncer,
    with what the callers got in the legend."""
    runs = [b for b in benches if b["extra_info"].get("series")]
    if not runs:
        ax.set_axis_off()
        return
    for b in runs:
        e = b["extra_info"]
        route = e.get("route", short(b["name"]))
        colour = FASTPOOL if route == "pgbouncer" else "#d73027"
        ts, ns = zip(*e["series"])
        ax.step(ts, ns, where="post", color=colour,
                label=f"{route}: {e['served']:,} served, {e['errors']} errors,"
                      f" outsider refused {e['outsider_refused']}")
    ax.axhline(20, color="#555555", linestyle="--", linewidth=1)
    ax.annotate("the server's limit for the application", (0, 20), textcoords="offset points",
                xytext=(4, 4), fontsize=8)
    ax.set_ylim(0, 26)
    ax.set_xlabel("seconds")
    ax.set_ylabel("client connections on the server")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("PostgreSQL fleet: 8 processes x pool of 10\nserver connections over time,"
                 " directly and through PgBouncer")


def _failover_panels(axes: Any, benches: list[dict[str, Any]]) -> None:
    """Each pool through a switchover and a crash: seconds until writes succeed on the new
    primary, errors its callers saw, acknowledged writes lost (bench/failover.py)."""
    runs = [b["extra_info"] for b in benches if "event" in b["extra_info"]]
    labels = [f"{e['engine']} {e['event']}\n{e['pool'][:38]}" for e in runs]
    colours = [FASTPOOL if e["pool"].startswith("fastpool") else "#d73027" for e in runs]
    y = list(range(len(runs)))
    never = 0.0
    for e in runs:
        if e.get("back") is not None:
            never = max(never, e["back"])
    never = max(never * 1.2, 5.0)
    panels = [
        ("writes succeed again on the new primary (s; bar at the end: never)",
         [never if e.get("back") is None else e["back"] for e in runs]),
        ("errors callers saw", [e["errors"] for e in runs]),
        ("acknowledged writes lost", [e["missing"] for e in runs]),
    ]
    for ax, (title, values) in zip(axes, panels):
        ax.barh(y, values, color=colours)
        ax.set_yticks(y)
        ax.set_yticklabels(labels if ax is axes[0] else [""] * len(y), fontsize=7)
        ax.invert_yaxis()
        timing = ax is axes[0]
        for yi, v in zip(y, values):
            text = ("never" if v == never else f"{v:.2f} s") if timing else f"{v:,}"
            ax.annotate(text, (v, yi), textcoords="offset points", xytext=(3, -3), fontsize=7)
        if not any(values):
            ax.set_xlim(0, 1)
        ax.set_title(f"failover: {title}", fontsize=10)


def _scale_panels(axes: Any, scale: dict[int, dict[str, dict[str, Any]]]) -> None:
    """Throughput, longest wait and the unluckiest thread's requests against thread count
    (16 connections), one line per pool."""
    if not scale:
        for ax in axes:
            ax.set_axis_off()
        return
    threads = list(scale)
    names = sorted({n for runs in scale.values() for n in runs}, key=lambda n: not is_fastpool(n))
    panels = (("requests_per_s", "scale: throughput, 16 connections\n(requests/s; higher is better)", False),
              ("max_ms", "scale: longest request\n(ms, log scale; lower is better)", True),
              ("fewest_requests_by_one_thread",
               "scale: requests of the unluckiest thread\n(0 = a thread starved all run)", False))
    for ax, (key, title, log) in zip(axes, panels):
        for name in names:
            pts = [(t, scale[t][name][key]) for t in threads if name in scale[t]]
            colour, marker = style(name)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-" if is_fastpool(name) else "--",
                    color=colour, marker=marker, label=name, linewidth=2 if is_fastpool(name) else 1.2)
            for t, v in pts:
                ax.annotate(f"{v:,.0f}" if v >= 10 else f"{v:.1f}", (t, v), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
        ax.set_xscale("log", base=2)
        ax.set_xticks(threads, [str(t) for t in threads])
        ax.set_xlabel("threads")
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.set_title(title)
        ax.legend(fontsize=8)


def write_html(path: Path, summary: str, chart: Path | None) -> None:
    """One file, no external references: the summary text and the chart inlined."""
    img = ""
    if chart is not None and chart.exists():
        b64 = base64.b64encode(chart.read_bytes()).decode()
        img = f'<img alt="fastpool comparison chart" src="data:image/png;base64,{b64}">'
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>fastpool comparison</title>"
        "<style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em;"
        "overflow-x:auto}img{max-width:100%}</style></head><body>"
        f"<h1>fastpool comparison</h1>{img}<pre>{html.escape(summary)}</pre></body></html>",
        encoding="utf-8",
    )
