"""The maintenance driver's pure parts: job names and order, engine names, `[maintenance]` options."""

from __future__ import annotations

import pytest

from icebergdo.errors import BadInputError, ConfigError
from icebergdo.maintenance.options import STEPS, MaintenanceOptions, check_engine, check_steps


def test_steps_run_in_the_driver_order() -> None:
    assert check_steps(None) == list(STEPS)
    assert check_steps(["orphans", "compact", "retention"]) == ["retention", "compact", "orphans"]
    with pytest.raises(BadInputError, match="vacuum"):
        check_steps(["compact", "vacuum"])


def test_engines() -> None:
    assert check_engine("python") == "python" and check_engine("spark") == "spark"
    with pytest.raises(BadInputError, match="trino"):
        check_engine("trino")


def test_options_from_config_and_overrides() -> None:
    o = MaintenanceOptions.from_config(
        {"older_than": "5d", "retain_last": 3, "orphan_age": "12h", "target_file_size": "1024", "min_input_files": 2, "rollup_after": "7d", "lock_ttl": "10m"}
    )
    assert o == MaintenanceOptions(older_than=5 * 86400, retain_last=3, orphan_age=12 * 3600, target_file_size=1024, min_input_files=2, rollup_after=7 * 86400, lock_ttl=600)
    legacy = MaintenanceOptions.from_config({"snapshot_max_age_hours": 2, "orphan_min_age_hours": 30})
    assert (legacy.older_than, legacy.orphan_age) == (7200, 30 * 3600)
    assert o.merged(retain_last=None, min_input_files=9) == MaintenanceOptions(**{**o.__dict__, "min_input_files": 9})
    with pytest.raises(ConfigError, match="retain_last"):
        MaintenanceOptions.from_config({"retain_last": "many"}, source="x.toml")
