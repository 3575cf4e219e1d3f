"""icebergdo: Iceberg-native table manager for event data."""

from icebergdo.config import Config, S3Settings
from icebergdo.errors import BadInputError, BadNameError, ConfigError, IcebergdoError, StorageError
from icebergdo.lakehouse import AppendResult, Lakehouse

__all__ = [
    "AppendResult",
    "BadInputError",
    "BadNameError",
    "Config",
    "ConfigError",
    "IcebergdoError",
    "Lakehouse",
    "S3Settings",
]
__version__ = "0.1.0"
