"""Row filters for scans, typed: pyiceberg's predicates are pydantic models whose own
`__init__(term, literal)` type checkers do not see (they see the model fields instead)."""

from __future__ import annotations

from typing import Any

from pyiceberg.expressions import (
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    LessThan,
    LessThanOrEqual,
)


def eq(column: str, value: Any) -> BooleanExpression:
    return EqualTo(column, value)  # type: ignore[call-arg, arg-type]


def ge(column: str, value: Any) -> BooleanExpression:
    return GreaterThanOrEqual(column, value)  # type: ignore[call-arg, arg-type]


def lt(column: str, value: Any) -> BooleanExpression:
    return LessThan(column, value)  # type: ignore[call-arg, arg-type]


def le(column: str, value: Any) -> BooleanExpression:
    return LessThanOrEqual(column, value)  # type: ignore[call-arg, arg-type]
