"""Turning a run's JSON into a markdown table and a ratio chart.

The chart needs matplotlib, an optional dependency: without it the chart is
skipped with a hint (`pip install matplotlib`).
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import psutil

CHART_HINT = "matplotlib is not installed; `pip install matplotlib` to get the chart"


def machine() -> dict[str, object]:
    """CPU model, core count and memory of this machine (from lscpu and psutil)."""
    info: dict[str, object] = {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, val = line.partition(":")
            if key.strip() in ("Model name", "Architecture", "Hypervisor vendor", "Thread(s) per core"):
                info[key.strip().lower().replace(" ", "_").replace("(s)", "s")] = val.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def machine_line(m: dict[str, object]) -> str:
    model = m.get("model_name", "unknown CPU")
    hv = f", {m['hypervisor_vendor']} VM" if m.get("hypervisor_vendor") else ""
    return f"{model}, {m.get('cpus')} CPUs{hv}, {m.get('memory_gib')} GiB RAM, Linux {m.get('kernel')}, Python {m.get('python')}"


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def geomean(xs: list[float]) -> float | None:
    """Geometric mean of the positive values (None if there are none)."""
    xs = [x for x in xs if x and x > 0]
    return float(math.exp(np.mean(np.log(xs)))) if xs else None


def summary(sysres: dict[str, object]) -> dict[str, float | None]:
    """The headline numbers of one system's run (None where not measured)."""
    ing = sysres.get("ingest") or {}
    qs = sysres.get("queries") or []
    medians = [q["median_ms"] for q in qs if q.get("median_ms") is not None]
    by_phase = sysres.get("peak_rss_bytes_by_phase") or {}
    return {
        "samples_per_s": ing.get("samples_per_s"),
        "samples_per_cpu_s": sysres.get("samples_per_cpu_s"),
        "samples_per_cpu_s_with_flush": sysres.get("samples_per_cpu_s_with_flush"),
        "peak_rss_mib": (sysres["peak_rss_bytes"] / 2**20) if sysres.get("peak_rss_bytes") else None,
        "peak_pss_mib": (sysres["peak_pss_bytes"] / 2**20) if sysres.get("peak_pss_bytes") else None,
        "peak_anon_mib": (sysres["peak_anon_bytes"] / 2**20) if sysres.get("peak_anon_bytes") else None,
        "peak_rss_ingest_mib": (by_phase["ingest"] / 2**20) if "ingest" in by_phase else None,
        "peak_rss_queries_mib": (by_phase["queries"] / 2**20) if "queries" in by_phase else None,
        "bytes_per_sample": sysres.get("bytes_per_sample"),
        "query_geomean_ms": geomean(medians),
        "queries_ok": float(sum(1 for q in qs if not q.get("errors"))) if qs else None,
    }


def markdown(run: dict[str, object]) -> str:
    """The run as markdown: headline table, then one row per query."""
    systems: dict[str, dict] = run["systems"]  # type: ignore[assignment]
    names = [n for n in systems]
    ok = [n for n in names if systems[n].get("status") == "ok"]
    lines = []
    ds = run["dataset"]
    lines.append(f"Profile `{run['profile']}`: {ds['n_series']:,} series x {ds['n_samples']} samples = "
                 f"{ds['n_samples_total']:,} samples, {ds['requests']} remote-write requests "
                 f"({ds['series_per_request']} series x {ds['samples_per_series']} samples, "
                 f"{ds['compressed_bytes'] / 2**20:.1f} MiB snappy), concurrency {run['concurrency']}.")
    lines.append("")
    for n in names:
        if systems[n].get("status") != "ok":
            lines.append(f"- {n}: {systems[n].get('status')} — {systems[n].get('reason', '')}")
    if len(ok) < len(names):
        lines.append("")
    header = "| metric | " + " | ".join(ok) + " |"
    lines += [header, "|---" * (len(ok) + 1) + "|"]
    sums = {n: summary(systems[n]) for n in ok}
    rows = [
        ("ingest, samples/s (wall)", "samples_per_s", 0),
        ("samples per server CPU-second", "samples_per_cpu_s", 0),
        ("… counting CPU until flushed and idle", "samples_per_cpu_s_with_flush", 0),
        ("peak RSS of the server tree, MiB", "peak_rss_mib", 0),
        ("… while ingesting (and idle while the others ingest)", "peak_rss_ingest_mib", 0),
        ("… while querying", "peak_rss_queries_mib", 0),
        ("peak PSS of the server tree, MiB", "peak_pss_mib", 0),
        ("peak anonymous RSS (less file-backed pages), MiB", "peak_anon_mib", 0),
        ("bytes per sample on disk", "bytes_per_sample", 3),
        ("query latency, geometric mean of medians, ms", "query_geomean_ms", 3),
    ]
    for title, key, _ in rows:
        lines.append(f"| {title} | " + " | ".join(_fmt(sums[n][key]) for n in ok) + " |")
    lines.append("| HTTP statuses of writes | " + " | ".join(
        ", ".join(f"{k}×{v}" for k, v in systems[n]["ingest"]["statuses"].items())
        + (" (stopped early: ingest budget used up)" if systems[n]["ingest"].get("stopped_early") else "")
        for n in ok) + " |")
    lines.append("| ingest wall time, s | " + " | ".join(_fmt(systems[n]["ingest"]["wall_s"]) for n in ok) + " |")
    lines.append("| server CPU during ingest, s | " + " | ".join(_fmt(systems[n].get("ingest_cpu_s")) for n in ok) + " |")
    lines.append("| disk bytes (after flush) | " + " | ".join(_fmt(systems[n].get("disk_bytes")) for n in ok) + " |")
    lines.append("| queries answered without error | " + " | ".join(
        f"{int(sums[n]['queries_ok'] or 0)}/{len(systems[n].get('queries', []))}" for n in ok) + " |")
    lines.append("")
    lines.append("Query latency, median / p90 in ms; for systems other than Prometheus, the answer compared "
                 "with Prometheus' (`=` same series set, then max relative difference; `≠a/b` series only in "
                 "Prometheus / only here; `=ⁿ` same once `__name__` is ignored; `!` error).")
    lines.append("")
    lines.append("| query | mode | " + " | ".join(ok) + " |")
    lines.append("|---|---" + "|---" * len(ok) + "|")
    per: dict[tuple[str, str], dict[str, dict]] = {}
    for n in ok:
        for q in systems[n].get("queries", []):
            per.setdefault((q["query"], q["mode"]), {})[n] = q
    for (qname, mode), by_sys in per.items():
        cells = []
        for n in ok:
            q = by_sys.get(n)
            if q is None:
                cells.append("–")
                continue
            if q["errors"] and q["median_ms"] is None:
                cells.append("! " + q["errors"][0][:40].replace("|", "/").replace("\n", " "))
                continue
            cell = f"{_fmt(q['median_ms'])} / {_fmt(q['p90_ms'])}"
            d = q.get("diff_vs_prometheus")
            if d and d.get("comparable"):
                if d.get("same_series") or d.get("same_series_ignoring_name"):
                    rel = d.get("max_rel_diff")
                    cell += " =" if d.get("same_series") else " =ⁿ"
                    cell += f" {rel:.1e}" if isinstance(rel, float) and rel > 0 else (" inf" if rel == "inf" else " 0")
                else:
                    cell += f" ≠{d['only_in_reference']}/{d['only_here']}"
            cells.append(cell)
        lines.append(f"| {qname} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chart(run: dict[str, object], path: Path) -> str | None:
    """Ratio of each system to Prometheus (>1 = better) as a PNG; None or a hint."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return CHART_HINT
    systems: dict[str, dict] = run["systems"]  # type: ignore[assignment]
    if systems.get("prometheus", {}).get("status") != "ok":
        return "no Prometheus results to compare with; chart skipped"
    ref = summary(systems["prometheus"])
    others = [n for n, s in systems.items() if n != "prometheus" and s.get("status") == "ok"]
    if not others:
        return "only Prometheus ran; chart skipped"
    metrics = [
        ("ingest samples/s", "samples_per_s", True),
        ("samples per CPU-s", "samples_per_cpu_s", True),
        ("peak RSS", "peak_rss_mib", False),
        ("bytes/sample", "bytes_per_sample", False),
        ("query latency", "query_geomean_ms", False),
    ]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(others)
    x = np.arange(len(metrics))
    extent = 0.0
    for i, n in enumerate(others):
        s = summary(systems[n])
        ratios = []
        for _title, key, higher_better in metrics:
            a, b = s.get(key), ref.get(key)
            if not a or not b:
                ratios.append(np.nan)
            else:
                ratios.append(a / b if higher_better else b / a)
        r = np.array(ratios)
        # Bars grow from 1 (parity) up or down, so worse-than-Prometheus points down.
        xs = x + (i - (len(others) - 1) / 2) * width
        ax.bar(xs, r - 1.0, width, bottom=1.0, label=n)
        for xi, ri in zip(xs, r):
            if not np.isnan(ri):
                ax.annotate(f"{ri:.2g}×", (xi, ri), ha="center", va="bottom" if ri >= 1 else "top", fontsize=8)
        extent = max(extent, float(np.nanmax(np.abs(np.log10(np.where(r > 0, r, np.nan))), initial=0.0)))
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    lim = 10 ** (max(extent, 0.3) * 1.25)
    ax.set_ylim(1 / lim, lim)
    times = matplotlib.ticker.FuncFormatter(lambda v, _p: f"{v:g}×")
    ax.yaxis.set_major_formatter(times)
    ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
    ax.yaxis.set_minor_formatter(times)
    ax.set_xticks(x, [m[0] for m in metrics])
    ax.set_ylabel("× Prometheus (>1 = better)")
    ax.set_title(f"profile {run['profile']}: each system relative to Prometheus ({run['date'][:10]})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
