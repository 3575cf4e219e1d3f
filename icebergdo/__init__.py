"""icebergdo: Iceberg-native table manager for event data.

One entry point, `Lakehouse.open(...)`; everything else hangs off it (writer, collections,
maintenance, DuckDB). The names below are the public API.
"""

from icebergdo.cdc import ApplyResult, Collection, route_events
from icebergdo.config import Config, S3Settings
from icebergdo.errors import BadInputError, BadNameError, ConfigError, IcebergdoError, StorageError
from icebergdo.lakehouse import AppendResult, Lakehouse
from icebergdo.maintenance import MaintenanceOptions
from icebergdo.wal import WalLockedError
from icebergdo.writer import BackpressureError, FlushTimeoutError, Writer, WriterStats

__all__ = [
    "AppendResult",
    "ApplyResult",
    "BackpressureError",
    "BadInputError",
    "BadNameError",
    "Collection",
    "Config",
    "ConfigError",
    "FlushTimeoutError",
    "IcebergdoError",
    "Lakehouse",
    "MaintenanceOptions",
    "S3Settings",
    "StorageError",
    "WalLockedError",
    "Writer",
    "WriterStats",
    "route_events",
]
__version__ = "0.1.0"
