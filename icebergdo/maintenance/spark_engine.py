"""The spark engine: Iceberg's own stored procedures, run by Spark on our tables.

The driver gives it the same tables, options, lock and safety checks as the python engine; it
maps each job onto a procedure and each procedure's output row onto a `StepReport`:

    compact    rewrite_data_files (bin-pack; `min-input-files`, `target-file-size-bytes`; with
               `rollup_after`, first a pass that merges whole partitions older than it)
    manifests  rewrite_manifests
    expire     expire_snapshots (`older_than`, `retain_last`; else the table's history.expire.*)
    orphans    remove_orphan_files per prefix, after `orphans.check_prefixes` and the other tables'
               prefixes (a prefix holding another table's files is skipped, never listed)
    retention  no Iceberg procedure: the python job, under the same lock

Compaction outputs carry the `_compact-` prefix as the python engine's do: the table is loaded
through a second Spark catalog over the same catalog rows whose data files get that prefix
(`engines.spark.add_catalog`), since a Java LocationProvider can only learn it from its catalog.
Iceberg's procedures have no dry-run mode, so plans come from the python planners (`steps`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from icebergdo.engines import spark as sp
from icebergdo.errors import IcebergdoError, UnsafePrefixError
from icebergdo.maintenance import steps
from icebergdo.maintenance.common import StepReport, table_prefixes, target_file_size
from icebergdo.maintenance.compact import COMPACT_PREFIX
from icebergdo.maintenance.orphans import check_prefixes, foreign_prefixes
from icebergdo.maintenance.retention import aligned_cutoff, time_field
from icebergdo.maintenance.steps import TableContext
from icebergdo.redact import scrub
from icebergdo.store import normalise

# remove_orphan_files refuses a window under a day (a file of a commit in flight could look
# orphaned); a shorter one, asked for explicitly, goes through Iceberg's DeleteOrphanFiles action.
PROCEDURE_MIN_ORPHAN_AGE_S = 24 * 3600 + 60
EXPIRE_COUNTS = (
    "deleted_data_files_count",
    "deleted_position_delete_files_count",
    "deleted_equality_delete_files_count",
    "deleted_manifest_files_count",
    "deleted_manifest_lists_count",
    "deleted_statistics_files_count",
)


class SparkEngine:
    name = "spark"

    def __init__(self, lh: Any, spark: Any = None) -> None:
        self.lh = lh
        self.config = lh.config
        self._given = spark
        self._spark: Any = None
        self._compact_catalog: str | None = None

    # -- session -----------------------------------------------------------------------------
    @property
    def spark(self) -> Any:
        """The session, configured on first use (a job list of only retention never starts a JVM)."""
        if self._spark is None:
            self._spark = sp.session(self.lh, self._given)
            if not sp.capabilities(self._spark).extensions:
                raise sp.SparkSetupError(f"Iceberg's procedures need spark.sql.extensions={sp.EXTENSIONS} in the Spark session")
        return self._spark

    def compact_catalog(self) -> tuple[str, list[str]]:
        """The catalog compaction runs through: ours with the `_compact-` prefix when our jar is there."""
        if self._compact_catalog is None:
            if sp.capabilities(self.spark).icebergdo:
                self._compact_catalog = sp.add_catalog(self.spark, self.config, f"{self.config.catalog_name}__compact", file_prefix=COMPACT_PREFIX)
            else:
                self._compact_catalog = ""
        if self._compact_catalog:
            return self._compact_catalog, []
        return self.config.catalog_name, ["icebergdo's jar is not on Spark's classpath: outputs use Iceberg's default file layout"]

    def close(self) -> None:
        pass

    # -- jobs --------------------------------------------------------------------------------
    def run(self, step: str, ctx: TableContext) -> StepReport | None:
        if step == "retention":
            report = steps.retention(ctx, dry_run=False)
            if report is not None:
                report.notes.append("python job (Iceberg has no retention procedure)")
            return report
        job: Callable[[TableContext], StepReport] = getattr(self, f"_{step}")
        before = ctx.table().current_snapshot()
        started = datetime.now(UTC)
        try:
            report = job(ctx)
        except UnsafePrefixError as e:
            ctx.progress(f"{ctx.name}: orphan removal refused: {e}")
            return steps.refused(ctx.name, step, False, e)
        except IcebergdoError:
            raise
        except Exception as e:  # noqa: BLE001 - py4j/Spark errors carry whole Java stack traces
            raise IcebergdoError(f"{ctx.name}: {step} (spark) failed: {scrub(sp.error_summary(e), self.config.secrets())}") from None
        report.seconds = (datetime.now(UTC) - started).total_seconds()
        self._new_snapshots(ctx, report, before.snapshot_id if before else None)
        return report

    def _call(self, procedure: str, catalog: str | None = None, **args: str) -> dict[str, Any]:
        rows = sp.call(self.spark, catalog or self.config.catalog_name, procedure, **args)
        return rows[0] if rows else {}

    def _compact(self, ctx: TableContext) -> StepReport:
        o = ctx.options
        catalog, notes = self.compact_catalog()
        options = {"min-input-files": str(int(o.min_input_files))}
        if o.target_file_size is not None:
            options["target-file-size-bytes"] = str(int(o.target_file_size))
        report = StepReport(ctx.name, "compact", False, notes=notes)
        passes: list[dict[str, Any]] = []
        if o.rollup_after is not None:
            rollup = self._rollup_filter(ctx, o.rollup_after)
            if rollup is None:
                report.notes.append("rollup_after: not a time-partitioned table")
            else:
                # Every file of an old partition below the target counts as small, and 2 of them make a group.
                target = o.target_file_size or target_file_size(ctx.table())
                whole = {**options, "min-input-files": "2", "min-file-size-bytes": str(max(1, int(target) - 1))}
                passes.append(self._call("rewrite_data_files", catalog, table=sp.table_literal(ctx.name), where=sp.text_literal(rollup), options=sp.map_literal(whole)))
        passes.append(self._call("rewrite_data_files", catalog, table=sp.table_literal(ctx.name), options=sp.map_literal(options)))
        report.files_in = sum(int(p.get("rewritten_data_files_count") or 0) for p in passes)
        report.bytes_in = sum(int(p.get("rewritten_bytes_count") or 0) for p in passes)
        report.files_out = sum(int(p.get("added_data_files_count") or 0) for p in passes)
        report.details.update(_summed(passes))
        if o.rollup_after is not None:
            report.details["rollup_where"] = rollup
        return report

    @staticmethod
    def _rollup_filter(ctx: TableContext, rollup_after: float) -> str | None:
        """`col < TIMESTAMP 'cutoff'`, the cutoff on a partition boundary: exactly the partitions entirely older."""
        try:
            column, transform = time_field(ctx.table())
        except IcebergdoError:
            return None
        cutoff = aligned_cutoff(datetime.now(UTC) - timedelta(seconds=rollup_after), transform)
        return f"`{column}` < {sp.timestamp_literal(cutoff)}"

    def _manifests(self, ctx: TableContext) -> StepReport:
        row = self._call("rewrite_manifests", table=sp.table_literal(ctx.name))
        report = StepReport(ctx.name, "manifests", False, details=row)
        report.files_in = int(row.get("rewritten_manifests_count") or 0)
        report.files_out = int(row.get("added_manifests_count") or 0)
        return report

    def _expire(self, ctx: TableContext) -> StepReport:
        o = ctx.options
        args = {"table": sp.table_literal(ctx.name)}
        cutoff = steps.expire_cutoff(o)
        if cutoff is not None:
            args["older_than"] = sp.timestamp_literal(cutoff)
        if o.retain_last is not None:
            args["retain_last"] = str(int(o.retain_last))
        row = self._call("expire_snapshots", **args)
        report = StepReport(ctx.name, "expire", False, details=row)
        report.files_in = sum(int(row.get(k) or 0) for k in EXPIRE_COUNTS)
        report.details["expired_before"] = cutoff.isoformat() if cutoff else "table default (history.expire.max-snapshot-age-ms)"
        report.details["retain_last"] = o.retain_last if o.retain_last is not None else "table default (history.expire.min-snapshots-to-keep)"
        return report

    def _orphans(self, ctx: TableContext) -> StepReport:
        """remove_orphan_files on each of the table's prefixes that passes the python engine's checks."""
        table = ctx.table()
        prefixes = table_prefixes(table)
        check_prefixes(ctx.name, prefixes, table.metadata.location, ctx.warehouse)
        report = StepReport(ctx.name, "orphans", False)
        locations = []
        for prefix in prefixes.all():
            foreign = foreign_prefixes(prefix, ctx.other_prefixes)
            if any(normalise(f) == normalise(prefix) for f in foreign):
                raise UnsafePrefixError(f"{ctx.name}: prefix {prefix} is also another table's prefix; refusing to list it")
            if foreign:
                # Iceberg would take the other table's files for ours: leave this prefix alone.
                report.notes.append(f"skipped {prefix}: another table keeps files below it ({', '.join(sorted(foreign))})")
                continue
            locations.append(prefix)
        older = datetime.now(UTC) - timedelta(seconds=ctx.options.orphan_age)
        found: list[str] = []
        for location in locations:
            ctx.progress(f"{ctx.name}: orphans under {location} (spark remove_orphan_files)")
            found += self._remove_orphans(ctx.name, location, older, ctx.options.orphan_age)
        report.files_in = len(found)
        report.details.update({"locations": locations, "orphan_file_count": len(found), "paths": sorted(found)[:20], "older_than": older.isoformat()})
        return report

    def _remove_orphans(self, name: str, location: str, older: datetime, age_s: float) -> list[str]:
        # On S3 the FileIO lists by key prefix: the trailing slash keeps `events` from matching `events2/`.
        where = location.rstrip("/") + "/" if self.config.is_s3 else location
        if age_s >= PROCEDURE_MIN_ORPHAN_AGE_S:
            args = {"table": sp.table_literal(name), "location": sp.text_literal(where), "older_than": sp.timestamp_literal(older)}
            if self.config.is_s3:
                args["prefix_listing"] = "true"  # list through the FileIO: Hadoop has no s3 file system here
            rows = sp.call(self.spark, self.config.catalog_name, "remove_orphan_files", **args)
            return [r["orphan_file_location"] for r in rows]
        jvm = self.spark._jvm
        jspark = self.spark._jsparkSession
        table = jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(jspark, f"{self.config.catalog_name}.{name}")
        action = (
            jvm.org.apache.iceberg.spark.actions.SparkActions.get(jspark).deleteOrphanFiles(table).location(where).olderThan(int(older.timestamp() * 1000))
        )
        if self.config.is_s3:
            action = action.usePrefixListing(True)
        return [str(p) for p in action.execute().orphanFileLocations()]

    def _new_snapshots(self, ctx: TableContext, report: StepReport, before: int | None) -> None:
        """The snapshot the job committed, and the bytes its snapshots added (what Iceberg's rows lack)."""
        table = ctx.table()
        snap = table.current_snapshot()
        if snap is None or snap.snapshot_id == before:
            return
        report.snapshot_id = snap.snapshot_id
        added = 0
        while snap is not None and snap.snapshot_id != before:
            summary = snap.summary.additional_properties if snap.summary else {}
            added += int(summary.get("added-files-size", 0) or 0)
            snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
        if report.step == "compact":
            report.bytes_out = added


def _summed(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in rows:
        for k, v in row.items():
            out[k] = out.get(k, 0) + v if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    return out
