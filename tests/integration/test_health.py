"""`health` plans with `maintain`'s planner: due / not due, carry-over into expiry, --check, prometheus, HTML."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from icebergdo import Config, Lakehouse
from icebergdo.cli import main
from icebergdo.maintenance import MaintenanceOptions, maintain
from icebergdo.maintenance import plan as driver_plan
from icebergdo.maintenance.health import plan, report
from tests.integration.procs import cli_args

pytestmark = pytest.mark.rest_backend  # also on the `rest` backend (tests/conftest.py)

BASE = datetime(2026, 5, 1, 10, tzinfo=UTC)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def batch(i: int, n: int = 40) -> list[dict]:
    """Events without ids, up to 20 minutes late, over three hours."""
    return [{"ts": BASE + timedelta(minutes=(i * 7 + k * 3) % 180) - timedelta(minutes=k % 20), "type": "webhook",
             "source": "stripe", "payload": {"i": i, "k": k, "note": "x" * 200}} for k in range(n)]


def fill(lh: Lakehouse, commits: int = 6) -> None:
    for i in range(commits):
        lh.append_events(batch(i))


def test_health_due_is_what_maintain_plans(lh: Lakehouse, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(lh)
    base = cli_args(config, tmp_path)
    code, out, _ = run(capsys, *base, "health", "--format", "json")
    (h,) = json.loads(out)
    due = {j["job"] for j in h["jobs"] if j["due"]}
    code, out, _ = run(capsys, *base, "maintain", "--dry-run", "--format", "json")
    planned = {r["step"] for r in json.loads(out) if r["files_in"] or r["details"].get("snapshots_expired")}
    assert due == planned == {"compact", "manifests"}
    compact = next(j for j in h["jobs"] if j["job"] == "compact")
    assert 0 < compact["files"] <= h["data_files"] and "at least 5 small files" in compact["reason"]
    assert h["target_file_bytes"] == 32 * 1024 * 1024  # the events.raw default
    retention = next(j for j in h["jobs"] if j["job"] == "retention")
    assert not retention["due"] and retention["reason"] == "no [retention] policy for this table"
    assert run(capsys, *base, "maintain", "--quiet")[0] == 0
    code, out, _ = run(capsys, *base, "health", "--format", "jsonl")
    jobs = {j["job"]: j for j in map(json.loads, out.splitlines())}
    assert not any(j["due"] for j in jobs.values()), jobs
    assert "no partition has 5 or more files" in jobs["compact"]["reason"]


def test_dry_run_expiry_counts_what_earlier_jobs_free(lh: Lakehouse) -> None:
    fill(lh, 8)
    opts = MaintenanceOptions(older_than=0, orphan_age=3 * 86400)
    alone = {r.step: r for r in driver_plan(lh, options=opts, progress=None)}
    planned = {r.step: r for r in plan(lh, options=opts)}
    done = {r.step: r for r in maintain(lh, options=opts, progress=None)}
    assert done["compact"].files_in == planned["compact"].files_in > 0
    # The driver's plan alone sees only today's history; the real run also frees the compaction inputs.
    assert alone["expire"].bytes_in < done["expire"].bytes_in / 4
    assert planned["expire"].files_in >= done["compact"].files_in
    assert 0.8 * done["expire"].bytes_in <= planned["expire"].bytes_in <= 1.25 * done["expire"].bytes_in
    assert abs(planned["expire"].files_in - done["expire"].files_in) <= max(3, done["expire"].files_in // 10)
    carry = planned["expire"].details["freed_after_earlier_jobs"]
    assert carry["files"] >= done["compact"].files_in and not carry["upper_bound"]


def test_health_check_exit_codes(lh: Lakehouse, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(lh)
    base = cli_args(config, tmp_path)
    assert run(capsys, *base, "health", "--check")[0] == 0  # due, but the table is minutes old: not overdue
    code, out, err = run(capsys, *base, "health", "--check", "--overdue-after", "0s")
    assert code == 9 and "maintenance overdue" in err and "events.raw (compact, manifests)" in err
    assert "OVERDUE" in out
    (t,) = report(lh, overdue_after=0, now=datetime.now(UTC).timestamp() + 10)
    assert t.overdue and {j.job for j in t.jobs if j.overdue} == {"compact", "manifests"}
    assert run(capsys, *base, "maintain", "--quiet")[0] == 0
    assert run(capsys, *base, "health", "--check", "--overdue-after", "0s")[0] == 0  # nothing due any more


def test_prometheus_textfile(lh: Lakehouse, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    fill(lh)
    base = cli_args(config, tmp_path)
    target = tmp_path / "icebergdo.prom"
    assert run(capsys, *base, "health", "--format", "prometheus", "--output", str(target))[0] == 0
    families = {f.name: f for f in text_string_to_metric_families(target.read_text())}
    code, out, _ = run(capsys, *base, "health", "--json")
    (h,) = json.loads(out)

    def value(name: str, **labels: str) -> float:
        return next(s.value for s in families[name].samples if all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("icebergdo_table_data_files", table="events.raw") == h["data_files"]
    assert value("icebergdo_table_snapshots", table="events.raw") == h["snapshots"]
    assert value("icebergdo_maintenance_due", table="events.raw", job="compact") == 1
    assert value("icebergdo_maintenance_due", table="events.raw", job="expire") == 0
    assert value("icebergdo_maintenance_overdue", table="events.raw", job="compact") == 0
    compact = next(j for j in h["jobs"] if j["job"] == "compact")
    assert value("icebergdo_maintenance_planned_files", table="events.raw", job="compact") == compact["files"] > 0
    assert value("icebergdo_maintenance_planned_bytes", table="events.raw", job="compact") == compact["bytes"]
    assert not list(tmp_path.glob(".icebergdo.prom.*"))  # written atomically, nothing left behind


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


def test_html_report_renders_in_headless_chromium(lh: Lakehouse, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from playwright.sync_api import sync_playwright

    fill(lh)
    lh.collection("shop", "orders", key=["id"]).apply([{"op": "insert", "ts": BASE, "id": "o1", "status": "new"}])
    base = cli_args(config, tmp_path)
    page_file = tmp_path / "report.html"
    code, out, err = run(capsys, *base, "health", "--html", str(page_file), "--format", "json")
    assert code == 0 and str(page_file.resolve()) in err
    health = {h["table"]: h for h in json.loads(out)}
    assert "cdn" not in page_file.read_text().lower().split("<body>")[1]  # self-contained: no external script
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
            page.goto(page_file.resolve().as_uri())
            page.wait_for_selector("section.table .chart .main-svg")
            assert errors == [] and requests == []
            sections = page.locator("section.table")
            assert sorted(sections.evaluate_all("els => els.map(e => e.dataset.table)")) == sorted(health)
            events = page.locator('section.table[data-table="events.raw"]')
            assert events.locator(".chart .main-svg").count() >= 4  # files, bytes, commits, latency (one svg each at least)
            for key in ("files", "bytes", "commits", "latency"):
                assert events.locator(f'.chart[data-chart="{key}"] .main-svg').count() >= 1, key
            bars = events.locator('.chart[data-chart="files"] .bars .point').count()
            partitions = events.locator('.chart[data-chart="bytes"] .bars .point').count()
            hours = lh.query("SELECT count(DISTINCT date_trunc('hour', ts AT TIME ZONE 'UTC')) AS n FROM events").column("n")[0].as_py()
            assert partitions == hours and partitions <= bars <= 2 * partitions  # one bar per partition and kind (small / target-sized)
            assert events.locator('.chart[data-chart="commits"] .scatterlayer .point').count() == health["events.raw"]["snapshots"]
            assert events.locator('.tile .v[data-key="live data files"]').inner_text().startswith(f"{health['events.raw']['data_files']:,} ")
            rows = events.locator("table.jobs tbody tr")
            jobs = {j["job"]: j for j in health["events.raw"]["jobs"]}
            assert rows.count() == len(jobs)
            assert events.locator("table.jobs tr.due td:first-child").all_inner_texts() == [j for j in jobs if jobs[j]["due"]]
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
        finally:
            browser.close()
