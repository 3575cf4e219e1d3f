"""What a maintenance run may do and with which knobs: the job names and `MaintenanceOptions`.

One set of options drives both engines (python and spark): the CLI flags, `[maintenance]` in the
config and `lh.maintain(options=...)` all end here, and each engine maps them onto its jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from icebergdo.errors import BadInputError, ConfigError
from icebergdo.maintenance.common import MIN_INPUT_FILES_DEFAULT, ORPHAN_AGE_DEFAULT_S, parse_duration
from icebergdo.maintenance.lock import DEFAULT_TTL_S
from icebergdo.units import parse_size

log = logging.getLogger(__name__)

# Run order per table: retention's deletes and compaction's replaced inputs are freed by the
# expiry that follows; orphans go last, once every job's commit is in the metadata.
STEPS = ("retention", "compact", "manifests", "expire", "orphans")
ENGINES = ("python", "spark")


def check_steps(steps: Iterable[str] | None) -> list[str]:
    """The chosen jobs in run order (all of them when none is named); unknown names are refused."""
    chosen = list(steps) if steps else list(STEPS)
    bad = [s for s in chosen if s not in STEPS]
    if bad:
        raise BadInputError(f"unknown maintenance step(s) {', '.join(bad)} (choose from {', '.join(STEPS)})")
    return [s for s in STEPS if s in chosen]


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise BadInputError(f"unknown maintenance engine {engine!r} (choose from {', '.join(ENGINES)})")
    return engine


@dataclass(frozen=True)
class MaintenanceOptions:
    """Knobs for every job; None means "the table property / Iceberg default"."""

    older_than: float | None = None  # expire snapshots older than this many seconds
    retain_last: int | None = None
    orphan_age: float = ORPHAN_AGE_DEFAULT_S
    target_file_size: int | None = None
    min_input_files: int = MIN_INPUT_FILES_DEFAULT
    rollup_after: float | None = None  # partitions older than this are merged whole
    lock_ttl: float = DEFAULT_TTL_S
    unsafe_orphan_age: bool = False  # allow orphan_age below the 1 h floor (see orphans.py)
    lock_wait: float = 0.0  # seconds to wait for a table's maintenance lock before skipping it

    @classmethod
    def from_config(cls, section: dict[str, Any], source: str = "config") -> MaintenanceOptions:
        """`[maintenance]`: older_than, retain_last, orphan_age, unsafe_orphan_age, target_file_size, min_input_files,
        rollup_after, lock_ttl, lock_wait.

        The old Spark-only keys `snapshot_max_age_hours` and `orphan_min_age_hours` are read too
        (as `older_than`/`orphan_age`).
        """
        known = {"older_than", "retain_last", "orphan_age", "unsafe_orphan_age", "target_file_size", "min_input_files", "rollup_after", "lock_ttl", "lock_wait"}
        aliases = {"snapshot_max_age_hours": "older_than", "orphan_min_age_hours": "orphan_age"}
        unknown = set(section) - known - set(aliases)
        if unknown:
            log.warning("%s: [maintenance] keys not used: %s", source, ", ".join(sorted(unknown)))
        kw: dict[str, Any] = {}
        for alias, key in aliases.items():
            if alias in section and key not in section:
                kw[key] = parse_duration(f"{section[alias]}h", where=f"{source}: [maintenance] {alias}")
        if "unsafe_orphan_age" in section:  # TOML booleans, or text from ${ENV} interpolation
            value = section["unsafe_orphan_age"]
            text = str(value).strip().lower()
            if not isinstance(value, bool) and text not in ("true", "false"):
                raise ConfigError(f"{source}: [maintenance] unsafe_orphan_age: expected true or false, got {value!r}")
            kw["unsafe_orphan_age"] = value if isinstance(value, bool) else text == "true"
        for key in ("older_than", "orphan_age", "rollup_after", "lock_ttl", "lock_wait"):
            if key in section:
                kw[key] = parse_duration(section[key], where=f"{source}: [maintenance] {key}")
        if "target_file_size" in section:
            kw["target_file_size"] = parse_size(section["target_file_size"], where=f"{source}: [maintenance] target_file_size")
        for key in ("retain_last", "min_input_files"):
            if key in section:
                try:
                    kw[key] = int(section[key])
                except (TypeError, ValueError):
                    raise ConfigError(f"{source}: [maintenance] {key}: expected an integer, got {section[key]!r}") from None
        return cls(**kw)

    def merged(self, **overrides: Any) -> MaintenanceOptions:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
