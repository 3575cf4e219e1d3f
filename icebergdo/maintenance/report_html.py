"""`icebergdo health --html FILE`: one self-contained page per lakehouse that shows what health says.

Per table: the live files per partition in time order, small vs target-sized (what compaction will
merge), bytes per partition, the last N commits (rows and files added, live files after each
commit — compaction shows as a drop — and commit latency), manifests, unreferenced bytes, and the
jobs `maintain` would run next with the planner's reasons (`icebergdo.maintenance.health`).

Charts are Plotly figures; plotly.js is inlined once, so the page works offline, from a file or
an e-mail attachment. Everything comes from table metadata (snapshot summaries and timestamps,
manifest entries): no data file is read.

Commit latency is the time from the oldest `ingested_at` of the rows a commit added (the column
statistics of its added files, a lower bound kept in the manifests) to the commit's timestamp: how
long the oldest event of the batch waited before readers could see it. Tables without an
`ingested_at` column (CDC tables) show the time between commits instead.
"""

from __future__ import annotations

import html
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyiceberg.manifest import ManifestContent, ManifestEntryStatus
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from icebergdo.errors import SetupError
from icebergdo.maintenance.common import SMALL_FILE_RATIO
from icebergdo.units import format_duration, format_size

if TYPE_CHECKING:
    from icebergdo.maintenance.health import TableReport
    from icebergdo.tables import Tables

LATENCY_COLUMNS = ("ingested_at", "_ingested_at")
COLORS = {"small": "#e8833a", "target": "#2f7ebc", "bytes": "#6c757d", "rows": "#2f7ebc", "files": "#e8833a", "latency": "#8e44ad"}


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ModuleNotFoundError:
        raise SetupError("the HTML health report needs plotly: pip install 'icebergdo[report]'") from None
    return go


# -- data ------------------------------------------------------------------------------------------
def partition_files(table: Table) -> list[dict[str, Any]]:
    """Per partition of the current snapshot, in partition order: files small / target-sized, bytes."""
    snap = table.current_snapshot()
    if snap is None:
        return []
    small = int(_target(table) * SMALL_FILE_RATIO)
    specs, schema = table.specs(), table.schema()
    parts: dict[str, dict[str, Any]] = {}
    for task in table.scan().plan_files():
        f = task.file
        spec = specs[f.spec_id]
        label = spec.partition_to_path(f.partition, schema) if spec.fields else "(unpartitioned)"
        p = parts.setdefault(label, {"partition": label, "small": 0, "target": 0, "bytes": 0, "rows": 0})
        p["small" if f.file_size_in_bytes < small else "target"] += 1
        p["bytes"] += f.file_size_in_bytes
        p["rows"] += f.record_count
    return [parts[k] for k in sorted(parts)]


def _target(table: Table) -> int:
    from icebergdo.maintenance.common import target_file_size

    return target_file_size(table)


def _latency_s(table: Table, snap: Snapshot, field_id: int) -> float | None:
    """Commit time minus the oldest `ingested_at` lower bound of the files the snapshot added."""
    from pyiceberg.conversions import from_bytes

    field_type = table.schema().find_field(field_id).field_type
    oldest = None
    for m in snap.manifests(table.io):
        if m.content != ManifestContent.DATA or m.added_snapshot_id != snap.snapshot_id:
            continue
        for e in m.fetch_manifest_entry(table.io, discard_deleted=True):
            if e.status != ManifestEntryStatus.ADDED:
                continue
            raw = (e.data_file.lower_bounds or {}).get(field_id)
            if raw is not None:
                us = from_bytes(field_type, raw)  # type: ignore[arg-type]  # a timestamp: microseconds
                oldest = us if oldest is None or us < oldest else oldest
    return None if oldest is None else max(0.0, snap.timestamp_ms / 1000 - float(oldest) / 1e6)


def commits(table: Table, last: int) -> list[dict[str, Any]]:
    """The last `last` snapshots (oldest first): time, operation, rows/files added, live files, latency."""
    snaps = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)[-last:]
    schema = table.schema()
    field = next((schema.find_field(c) for c in LATENCY_COLUMNS if c in {f.name for f in schema.fields}), None)

    def latency(s: Snapshot) -> float | None:
        op = s.summary.operation.value if s.summary is not None else ""
        if field is None or op != "append":
            return None
        try:
            return _latency_s(table, s, field.field_id)
        except Exception:  # noqa: BLE001 - a manifest gone under us (expiry) leaves a gap, not a failed report
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        latencies = list(pool.map(latency, snaps))
    out, previous = [], None
    for s, lat in zip(snaps, latencies, strict=True):
        summary = s.summary.additional_properties if s.summary is not None else {}
        op = s.summary.operation.value if s.summary is not None else "?"
        out.append({
            "time": datetime.fromtimestamp(s.timestamp_ms / 1000, UTC),
            "operation": op + (f" ({summary['icebergdo.maintenance']})" if "icebergdo.maintenance" in summary else ""),
            "added_rows": int(summary.get("added-records", 0)),
            "added_files": int(summary.get("added-data-files", 0)),
            "live_files": int(summary["total-data-files"]) if "total-data-files" in summary else None,
            "latency_s": lat,
            "since_previous_s": (s.timestamp_ms - previous) / 1000 if previous is not None else None,
        })
        previous = s.timestamp_ms
    return out


def _labels(paths: list[str]) -> tuple[list[str], str]:
    """`ts_hour=2026-05-01-13` → `2026-05-01-13` when every partition has the same single field."""
    names = {p.split("=", 1)[0] for p in paths if "=" in p and "/" not in p}
    if len(names) == 1 and all("=" in p and "/" not in p for p in paths):
        return [p.split("=", 1)[1] for p in paths], names.pop()
    return paths, "partition"


# -- page ------------------------------------------------------------------------------------------
def _figures(table: Table, report: TableReport, last: int) -> list[tuple[str, Any]]:
    go = _plotly()
    parts = partition_files(table)
    history = commits(table, last)
    figs: list[tuple[str, Any]] = []
    layout = dict(margin=dict(l=50, r=20, t=40, b=60), height=320, barmode="stack", template="plotly_white",
                  legend=dict(orientation="h", y=1.12, x=0))
    target = format_size(report.health.get("target_file_bytes"))
    x, axis = _labels([p["partition"] for p in parts])
    fig = go.Figure([
        go.Bar(name=f"small (< {SMALL_FILE_RATIO:.0%} of {target})", x=x, y=[p["small"] for p in parts], marker_color=COLORS["small"]),
        go.Bar(name="target-sized", x=x, y=[p["target"] for p in parts], marker_color=COLORS["target"]),
    ])
    fig.update_layout(title="Live data files per partition", yaxis_title="files", xaxis_title=axis, xaxis_type="category", **layout)
    figs.append(("files", fig))
    fig = go.Figure([go.Bar(name="bytes", x=x, y=[p["bytes"] for p in parts], marker_color=COLORS["bytes"],
                            customdata=[format_size(p["bytes"]) for p in parts], hovertemplate="%{x}<br>%{customdata}<extra></extra>")])
    fig.update_layout(title="Bytes per partition", yaxis_title="bytes", xaxis_title=axis, xaxis_type="category", **layout)
    figs.append(("bytes", fig))
    times = [c["time"] for c in history]
    fig = go.Figure([
        go.Bar(name="rows added", x=times, y=[c["added_rows"] for c in history], marker_color=COLORS["rows"],
               customdata=[c["operation"] for c in history], hovertemplate="%{x}<br>%{customdata}<br>%{y} rows<extra></extra>"),
        go.Scatter(name="live data files", x=times, y=[c["live_files"] for c in history], yaxis="y2", mode="lines+markers",
                   line=dict(color=COLORS["files"])),
    ])
    fig.update_layout(title=f"Last {len(history)} commits: rows added, live files after each", yaxis_title="rows",
                      yaxis2=dict(title="files", overlaying="y", side="right", rangemode="tozero"), **layout)
    figs.append(("commits", fig))
    has_latency = any(c["latency_s"] is not None for c in history)
    key = "latency_s" if has_latency else "since_previous_s"
    label = "commit latency (oldest ingested_at → commit)" if has_latency else "time since the previous commit"
    ys = [c[key] for c in history]
    fig = go.Figure([go.Scatter(name=label, x=times, y=ys, mode="markers+lines", line=dict(color=COLORS["latency"]),
                                customdata=[format_duration(v) if v is not None else "" for v in ys],
                                hovertemplate="%{x}<br>%{customdata}<extra></extra>")])
    fig.update_layout(title=label.capitalize(), yaxis_title="seconds", **{**layout, "barmode": None})
    figs.append(("latency", fig))
    return figs


def _tiles(report: TableReport) -> str:
    h = report.health
    last = h.get("last_maintenance")
    tiles = [
        ("snapshots", f"{h['snapshots']:,}"),
        ("live data files", f"{h['data_files']:,} ({h['small_files']:,} small)"),
        ("data", format_size(h["data_bytes"])),
        ("target file size", format_size(h.get("target_file_bytes"))),
        ("data manifests", f"{h['manifests']:,}"),
        ("unreferenced", f"{h['unreferenced_files']:,} files, {format_size(h['unreferenced_bytes'])}"),
        ("last maintenance", datetime.fromtimestamp(last, UTC).strftime("%Y-%m-%d %H:%M UTC") if last else "never"),
        ("status", "OVERDUE" if report.overdue else ("due" if report.due else "ok")),
    ]
    return "".join(f'<div class="tile"><div class="k">{html.escape(k)}</div><div class="v" data-key="{html.escape(k)}">{html.escape(v)}</div></div>'
                   for k, v in tiles)


def _jobs(report: TableReport) -> str:
    rows = []
    for j in report.jobs:
        state = "overdue" if j.overdue else ("due" if j.due else "not due")
        rows.append(f'<tr class="{state.replace(" ", "-")}"><td>{html.escape(j.job)}</td><td>{state}</td>'
                    f"<td>{j.files:,}</td><td>{html.escape(format_size(j.bytes))}</td><td>{html.escape(j.reason)}</td></tr>")
    return ('<table class="jobs"><thead><tr><th>job</th><th>state</th><th>files</th><th>bytes</th><th>why</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d2530}
header{background:#1d2530;color:#fff;padding:16px 28px}header h1{margin:0;font-size:22px}header p{margin:4px 0 0;color:#b8c2cc;font-size:13px}
nav{padding:8px 28px;background:#fff;border-bottom:1px solid #dde2e8;font-size:14px}nav a{margin-right:14px}
section.table{background:#fff;margin:18px 28px;padding:16px 20px;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08)}
section.table h2{margin:0 0 10px;font-size:19px}.badge{font-size:12px;padding:2px 8px;border-radius:10px;margin-left:8px;vertical-align:middle}
.badge.ok{background:#d4edda;color:#155724}.badge.due{background:#fff3cd;color:#856404}.badge.overdue{background:#f8d7da;color:#721c24}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px;margin-bottom:12px}
.tile{background:#f5f6f8;border-radius:6px;padding:8px 10px}.tile .k{font-size:11px;color:#5c6773;text-transform:uppercase;letter-spacing:.04em}
.tile .v{font-size:16px;font-weight:600;margin-top:2px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:8px}.chart{min-width:0;overflow:hidden}
table.jobs{border-collapse:collapse;width:100%;font-size:13px;margin-top:10px}table.jobs th,table.jobs td{text-align:left;padding:5px 8px;border-bottom:1px solid #e6e9ed}
tr.due td:nth-child(2){color:#856404;font-weight:600}tr.overdue td:nth-child(2){color:#721c24;font-weight:700}tr.not-due td:nth-child(2){color:#5c6773}
"""


# Charts drawn before the grid settles take the page's width; fit them to their cells once laid out.
RESIZE_JS = "window.addEventListener('load',function(){document.querySelectorAll('.js-plotly-plot').forEach(function(d){Plotly.Plots.resize(d);});});"


def render(lh: Tables, reports: list[TableReport], *, commits: int = 100, now: datetime | None = None) -> str:
    """The whole page as one HTML string (plotly.js inlined once)."""
    _plotly()
    from plotly.offline import get_plotlyjs

    now = now or datetime.now(UTC)
    sections, nav = [], []
    for n, r in enumerate(reports):
        table = lh.table(r.table)
        anchor = f"t{n}"
        state = "overdue" if r.overdue else ("due" if r.due else "ok")
        charts = "".join(
            f'<div class="chart" data-chart="{key}">'
            + fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"{anchor}-{key}", config={"displaylogo": False, "responsive": True})
            + "</div>"
            for key, fig in _figures(table, r, commits)
        )
        nav.append(f'<a href="#{anchor}">{html.escape(r.table)}</a>')
        sections.append(
            f'<section class="table" id="{anchor}" data-table="{html.escape(r.table)}"><h2>{html.escape(r.table)}'
            f'<span class="badge {state}">{state}</span></h2><div class="tiles">{_tiles(r)}</div>'
            f'<div class="charts">{charts}</div><h3>What <code>icebergdo maintain</code> would do next</h3>{_jobs(r)}</section>'
        )
    title = f"icebergdo health — {html.escape(lh.config.warehouse)}"
    body = "".join(sections) or '<section class="table"><p>No tables yet.</p></section>'
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style>'
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f'<header><h1>{title}</h1><p>catalog {html.escape(lh.config.catalog_name)} · {len(reports)} table(s) · '
        f'generated {now.strftime("%Y-%m-%d %H:%M:%S UTC")}</p></header><nav>{"".join(nav)}</nav>{body}'
        f"<script>{RESIZE_JS}</script></body></html>"
    )


def write_report(lh: Tables, reports: list[TableReport], path: str | Path, *, commits: int = 100) -> Path:
    """Write the page to `path` (atomically: a half-written report is never served)."""
    target = Path(path)
    text = render(lh, reports, commits=commits)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target
