"""Every error icebergdo raises on purpose, each with the exit code the CLI ends with.

One exit code per meaning, so a script or a scheduler can tell them apart (README, "Exit codes"):

    1  IcebergdoError        anything else that went wrong (a bug, or an error without a class of its own)
    2  ConfigError           the configuration (file, flags, environment) is incomplete or malformed
    3  BadInputError         input that does not fit; nothing of its batch was committed
    4  StorageError          the object store or the catalog is unreachable or refused the operation
    5  BusyError             another process holds what we need (a WAL folder, a table's maintenance lock)
    6  UnsafeOperationError  refused because it could delete what is not ours (orphan prefixes)
    7  NotFoundError         no such table, collection, snapshot or tag
    8  SetupError            a program, package or jar icebergdo needs is missing or would not start
    9  OverdueError          `health --check`: maintenance is due and has not run for too long

Messages name the line/field at fault and never carry a secret (see `icebergdo.redact`).
"""

from __future__ import annotations


class IcebergdoError(Exception):
    """Base class: the CLI prints these as one line and exits with `exit_code`."""

    exit_code = 1


class ConfigError(IcebergdoError):
    """The configuration is incomplete or malformed."""

    exit_code = 2


class BadInputError(IcebergdoError):
    """Input that does not fit: nothing of its batch was committed."""

    exit_code = 3


class BadNameError(BadInputError):
    """A namespace or table name that could escape its folder or confuse a reader."""


class RejectedBatchError(BadInputError):
    """A buffered batch can never commit (it does not fit the table): it was moved to the dead-letter
    folder of its write-ahead log (`icebergdo wal list|retry|drop`); the batches after it were committed."""


class StorageError(IcebergdoError):
    """The object store or the catalog could not be reached or refused the operation."""

    exit_code = 4


class BackpressureError(StorageError):
    """The writer could not flush fast enough and `append` waited longer than its timeout."""


class FlushTimeoutError(StorageError):
    """`flush()`/`close()` gave up waiting: the events stay buffered (and in the WAL, if durable)."""


class BusyError(IcebergdoError):
    """Another process holds what this one needs; retry later."""

    exit_code = 5


class WalLockedError(BusyError):
    """Another writer (in this or another process) owns the WAL folder."""


class LockBusyError(BusyError):
    """Another maintainer holds the table's maintenance lock."""


class UnsafeOperationError(IcebergdoError):
    """Refused: going on could delete files that are not this table's."""

    exit_code = 6


class UnsafePrefixError(UnsafeOperationError):
    """A listing prefix that does not look like the table's own: refusing to delete anything."""


class NotFoundError(IcebergdoError):
    """No such table, collection, snapshot or tag."""

    exit_code = 7


class NoSuchTableError(NotFoundError):
    """The catalog has no table by that name."""


class SetupError(IcebergdoError):
    """A program, package or jar icebergdo needs is missing or would not start; the message says what to install."""

    exit_code = 8


class SparkSetupError(SetupError):
    """Spark, Java or a jar is missing."""


class SeaweedFSError(SetupError):
    """The local S3 server could not be started or stopped."""


class OverdueError(IcebergdoError):
    """`health --check`: a maintenance job is due and none ran on the table for longer than the grace period."""

    exit_code = 9


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected error",
    2: "configuration error",
    3: "bad input (nothing committed)",
    4: "storage or catalog unreachable or refusing",
    5: "busy: another process holds the lock",
    6: "refused as unsafe",
    7: "not found",
    8: "missing dependency or setup problem",
    9: "maintenance overdue (health --check)",
}
