"""Errors a user can act on. Messages name the line/field at fault and never carry a secret."""

from __future__ import annotations


class IcebergdoError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""

    exit_code = 1


class ConfigError(IcebergdoError):
    """The configuration is incomplete or malformed."""

    exit_code = 2


class BadInputError(IcebergdoError):
    """Input that does not fit: nothing of its batch was committed."""

    exit_code = 3


class BadNameError(BadInputError):
    """A namespace or table name that could escape its folder or confuse a reader."""


class StorageError(IcebergdoError):
    """The object store or the catalog could not be reached or refused the operation."""

    exit_code = 4
