"""`health --format prometheus`: the health report in the Prometheus text format (node-exporter textfile collector).

Written by `prometheus_client` (no hand-made exposition format). One gauge family per measure, a
`table` label on each, and per (table, job) whether it is due / overdue and what it would touch,
so an alert can be as simple as `icebergdo_maintenance_overdue == 1`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

PREFIX = "icebergdo_"
TABLE_GAUGES = {  # health key -> (metric name, help)
    "snapshots": ("table_snapshots", "Snapshots in the table's metadata"),
    "data_files": ("table_data_files", "Live data files of the current snapshot"),
    "small_files": ("table_small_files", "Live data files below 75% of the target file size"),
    "data_bytes": ("table_data_bytes", "Bytes of the live data files"),
    "target_file_bytes": ("table_target_file_bytes", "write.target-file-size-bytes"),
    "manifests": ("table_data_manifests", "Data manifests of the current snapshot"),
    "unreferenced_files": ("table_unreferenced_files", "Files under the table's prefixes that no metadata references"),
    "unreferenced_bytes": ("table_unreferenced_bytes", "Bytes of the unreferenced files"),
    "last_maintenance": ("table_last_maintenance_timestamp_seconds", "When maintenance last ran on the table (0: never)"),
}


def render(reports: Iterable[Any], *, now: float | None = None) -> str:
    """The text exposition of `reports` (`icebergdo.maintenance.health.TableReport`s)."""
    import time

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector

    reports = list(reports)

    class HealthCollector(Collector):
        def collect(self) -> Iterable[Any]:
            for key, (name, text) in TABLE_GAUGES.items():
                g = GaugeMetricFamily(PREFIX + name, text, labels=["table"])
                for r in reports:
                    g.add_metric([r.table], float(r.health.get(key) or 0))
                yield g
            job_gauges = {
                "due": GaugeMetricFamily(PREFIX + "maintenance_due", "1 when maintain would do this job now", labels=["table", "job"]),
                "overdue": GaugeMetricFamily(PREFIX + "maintenance_overdue", "1 when the job is due and maintenance has not run for the grace period",
                                             labels=["table", "job"]),
                "files": GaugeMetricFamily(PREFIX + "maintenance_planned_files", "Files the job would rewrite or delete", labels=["table", "job"]),
                "bytes": GaugeMetricFamily(PREFIX + "maintenance_planned_bytes", "Bytes the job would rewrite or delete", labels=["table", "job"]),
            }
            for r in reports:
                for j in r.jobs:
                    for key, g in job_gauges.items():
                        g.add_metric([r.table, j.job], float(getattr(j, key)))
            yield from job_gauges.values()
            yield GaugeMetricFamily(PREFIX + "health_generated_timestamp_seconds", "When this report was made", value=time.time() if now is None else now)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector())
    return generate_latest(registry).decode()
