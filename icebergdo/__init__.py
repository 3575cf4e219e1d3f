"""icebergdo: Iceberg-native table manager for event data.

One entry point, `Lakehouse.open(...)`; everything else hangs off it (writer, collections,
maintenance, DuckDB, Spark). The names below are the public API. They are imported on first use,
so `import icebergdo` (and `icebergdo --help`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "AppendResult": "icebergdo.tables",
    "ApplyResult": "icebergdo.cdc.state",
    "BackpressureError": "icebergdo.errors",
    "BadInputError": "icebergdo.errors",
    "BadNameError": "icebergdo.errors",
    "BusyError": "icebergdo.errors",
    "Collection": "icebergdo.cdc.collection",
    "Config": "icebergdo.config",
    "ConfigError": "icebergdo.errors",
    "FlushTimeoutError": "icebergdo.errors",
    "IcebergdoError": "icebergdo.errors",
    "Lakehouse": "icebergdo.lakehouse",
    "LockBusyError": "icebergdo.errors",
    "MaintenanceOptions": "icebergdo.maintenance",
    "NoSuchTableError": "icebergdo.errors",
    "NotFoundError": "icebergdo.errors",
    "RejectedBatchError": "icebergdo.errors",
    "S3Settings": "icebergdo.config",
    "SetupError": "icebergdo.errors",
    "StepReport": "icebergdo.maintenance",
    "StorageError": "icebergdo.errors",
    "Tables": "icebergdo.tables",
    "TimeRule": "icebergdo.times",
    "UnsafeOperationError": "icebergdo.errors",
    "WalLockedError": "icebergdo.errors",
    "Writer": "icebergdo.writer",
    "WriterStats": "icebergdo.writer",
    "route_events": "icebergdo.cdc.routing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'icebergdo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:
    from icebergdo.cdc.collection import Collection
    from icebergdo.cdc.routing import route_events
    from icebergdo.cdc.state import ApplyResult
    from icebergdo.config import Config, S3Settings
    from icebergdo.errors import (
        BackpressureError,
        BadInputError,
        BadNameError,
        BusyError,
        ConfigError,
        FlushTimeoutError,
        IcebergdoError,
        LockBusyError,
        NoSuchTableError,
        NotFoundError,
        RejectedBatchError,
        SetupError,
        StorageError,
        UnsafeOperationError,
        WalLockedError,
    )
    from icebergdo.lakehouse import Lakehouse
    from icebergdo.maintenance import MaintenanceOptions, StepReport
    from icebergdo.tables import AppendResult, Tables
    from icebergdo.times import TimeRule
    from icebergdo.writer import Writer, WriterStats
