"""`icebergdo.errors`: one exit code per meaning, and the README's "Exit codes" table says exactly that.

When an error class or an exit code changes, this test fails and prints the table to paste into the README.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from icebergdo import errors

README = Path(__file__).resolve().parents[2] / "README.md"


def error_classes() -> list[type[errors.IcebergdoError]]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.IcebergdoError) and c.__module__ == errors.__name__]


def expected_table() -> str:
    lines = ["| code | meaning | raised as |", "| --- | --- | --- |"]
    for code, meaning in errors.EXIT_CODES.items():
        names = sorted((c for c in error_classes() if c.exit_code == code), key=lambda c: (len(c.__mro__), c.__name__))
        lines.append(f"| {code} | {meaning} | {', '.join(f'`{c.__name__}`' for c in names) or '—'} |")
    return "\n".join(lines)


def readme_table() -> str:
    text = README.read_text()
    m = re.search(r"^## Exit codes\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, "README.md has no '## Exit codes' section"
    return "\n".join(line for line in m.group(1).splitlines() if line.startswith("|"))


def test_readme_exit_code_table_matches_errors_py() -> None:
    assert readme_table() == expected_table(), "update README.md's 'Exit codes' table to:\n" + expected_table()


def test_every_error_class_has_a_documented_code() -> None:
    for cls in error_classes():
        assert cls.exit_code in errors.EXIT_CODES, f"{cls.__name__}.exit_code {cls.exit_code} is not in EXIT_CODES"
    used = {c.exit_code for c in error_classes()}
    assert set(errors.EXIT_CODES) - {0} == used, "every documented failure code is raised by some class"


def test_one_exit_code_per_meaning() -> None:
    assert len(set(errors.EXIT_CODES.values())) == len(errors.EXIT_CODES)
    for cls in error_classes():  # a subclass keeps its parent's meaning unless it is a base class of its own
        parent = cls.__mro__[1]
        if parent is not Exception and cls.exit_code != parent.exit_code:
            assert parent is errors.IcebergdoError, f"{cls.__name__} changes the exit code of {parent.__name__}"


def test_errors_docstring_lists_the_same_codes() -> None:
    doc = errors.__doc__ or ""
    listed = {int(code): name for code, name in re.findall(r"^\s+(\d+)\s+(\w+Error)\b", doc, re.M)}
    assert {code: getattr(errors, name).exit_code for code, name in listed.items()} == {code: code for code in listed}
    assert set(listed) == set(errors.EXIT_CODES) - {0}
