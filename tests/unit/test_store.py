"""`icebergdo.store` path spelling: every engine's way of writing a path normalises to one form, and
`is_under` compares folders segment-wise (what orphan removal's safety depends on)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icebergdo.store import is_under, normalise


@pytest.mark.parametrize(
    "path, expected",
    [
        ("s3://b/lake/x.parquet", "s3://b/lake/x.parquet"),
        ("s3a://b/lake/x.parquet", "s3://b/lake/x.parquet"),  # Spark
        ("s3n://b/lake/", "s3://b/lake"),
        ("S3://b//lake///x", "s3://b/lake/x"),
        ("s3://b/lake/./a/../x", "s3://b/lake/x"),
        ("s3://b", "s3://b"),
        ("s3://b/", "s3://b"),
        ("file:///tmp/lake/x", "file:///tmp/lake/x"),
        ("file:/tmp/lake/x", "file:///tmp/lake/x"),  # Java/Hadoop
        ("/tmp/lake/x", "file:///tmp/lake/x"),
        ("file://localhost/tmp/lake", "file:///tmp/lake"),
        ("file:///tmp/a%20b/x", "file:///tmp/a b/x"),
        ("file:///tmp//lake/", "file:///tmp/lake"),
        ("  /tmp/lake  ", "file:///tmp/lake"),
        ("/", "file:///"),
        ("gs://b/x/", "gs://b/x"),  # unknown schemes are only trimmed
    ],
)
def test_normalise(path: str, expected: str) -> None:
    assert normalise(path) == expected


@pytest.mark.parametrize(
    "path, prefix, under",
    [
        ("s3://b/lake/data/x", "s3://b/lake/data", True),
        ("s3a://b/lake/data/x", "s3://b/lake/data/", True),
        ("s3://b/lake/data", "s3://b/lake/data", True),
        ("s3://b/lake/data2/x", "s3://b/lake/data", False),  # segment-wise, not a string prefix
        ("s3://b2/lake/data/x", "s3://b/lake/data", False),
        ("s3://b/lake/../other/x", "s3://b/lake", False),
        ("file:/tmp/lake/x", "/tmp/lake", True),
        ("file:///tmp/lakehouse/x", "file:///tmp/lake", False),
        ("file:///tmp/lake/x", "s3://tmp/lake", False),
    ],
)
def test_is_under(path: str, prefix: str, under: bool) -> None:
    assert is_under(path, prefix) is under


segment = st.text(alphabet="abcxyz019_-", min_size=1, max_size=6)


@given(st.sampled_from(["s3://", "s3a://", "file://", ""]), st.lists(segment, min_size=1, max_size=5))
def test_normalise_is_idempotent(scheme: str, parts: list[str]) -> None:
    path = scheme + "/".join(["bucket" if scheme.startswith("s3") else "/tmp", *parts])
    once = normalise(path)
    assert normalise(once) == once


@given(st.lists(segment, min_size=1, max_size=4), st.lists(segment, min_size=1, max_size=4))
def test_a_path_is_under_its_folders_only(folder: list[str], rest: list[str]) -> None:
    base = "s3://bucket/" + "/".join(folder)
    assert is_under(base + "/" + "/".join(rest), base)
    assert is_under(base, base)
    sibling = "s3://bucket/" + "/".join([*folder[:-1], folder[-1] + "x"])
    assert not is_under(sibling + "/" + "/".join(rest), base)
