"""The orphan window's floor: refused below 1 h unless overridden (no storage involved)."""

from __future__ import annotations

import pytest

from icebergdo.errors import BadInputError, UnsafeOperationError
from icebergdo.maintenance.common import ORPHAN_AGE_FLOOR_S
from icebergdo.maintenance.orphans import check_age


def test_windows_below_the_floor_need_the_override() -> None:
    check_age("t", ORPHAN_AGE_FLOOR_S, unsafe=False)
    check_age("t", 3 * 86400, unsafe=False)
    with pytest.raises(UnsafeOperationError, match=r"t: an orphan age of 3599s is below the 1h floor.*--unsafe-orphan-age") as e:
        check_age("t", ORPHAN_AGE_FLOOR_S - 1, unsafe=False)
    assert e.value.exit_code == 6
    check_age("t", 0, unsafe=True)
    with pytest.raises(BadInputError, match="negative"):
        check_age("t", -1, unsafe=True)


def test_config_can_allow_a_short_window_and_a_lock_wait() -> None:
    from icebergdo.errors import ConfigError
    from icebergdo.maintenance.options import MaintenanceOptions

    o = MaintenanceOptions.from_config({"orphan_age": "10m", "unsafe_orphan_age": True, "lock_wait": "5m"})
    assert (o.orphan_age, o.unsafe_orphan_age, o.lock_wait) == (600, True, 300)
    check_age("t", o.orphan_age, o.unsafe_orphan_age)
    with pytest.raises(ConfigError, match="unsafe_orphan_age"):
        MaintenanceOptions.from_config({"unsafe_orphan_age": "maybe"})
    assert MaintenanceOptions.from_config({"unsafe_orphan_age": "true"}).unsafe_orphan_age
