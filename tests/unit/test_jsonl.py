"""The JSONL reader (icebergdo.jsonl): chunks, line numbers, compression, stdin, bad bytes, content hash."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
import zstandard

from icebergdo.errors import BadInputError, IcebergdoError
from icebergdo.jsonl import JsonLines, read_records

LINES = [f'{{"n": {i}, "text": "{"x" * (i % 50)}"}}' for i in range(2000)]
TEXT = ("\n".join(LINES[:700]) + "\n\n   \n" + "\n".join(LINES[700:])).encode()  # two blank lines after line 700


def read_all(src: JsonLines, chunk_bytes: int) -> tuple[list[str], list[int], list[str]]:
    lines, numbers, digests = [], [], []
    with src:
        for chunk in src.chunks(chunk_bytes):
            lines += chunk.lines.to_pylist()
            numbers += chunk.numbers.to_pylist()
            digests.append(chunk.digest)
    return lines, numbers, digests


@pytest.mark.parametrize("compress", [None, "gzip", "zstd"])
def test_chunks_keep_line_numbers_and_skip_blank_lines(tmp_path: Path, compress: str | None) -> None:
    data = {None: TEXT, "gzip": gzip.compress(TEXT), "zstd": zstandard.ZstdCompressor().compress(TEXT)}[compress]
    path = tmp_path / "e.jsonl"
    path.write_bytes(data)
    lines, numbers, digests = read_all(JsonLines(str(path)), 4096)
    assert lines == LINES
    assert numbers == list(range(1, 701)) + list(range(703, 2003))
    assert len(digests) > 10  # bounded chunks, not one read of everything
    # the content hash is the same whatever the compression and wherever chunks are cut
    _, _, plain = read_all(JsonLines(str(path)), 100_000)
    assert plain[-1] == digests[-1]


def test_identical_content_has_identical_chunks_and_hashes(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    a.write_bytes(TEXT)
    b.write_bytes(gzip.compress(TEXT))
    assert read_all(JsonLines(str(a)), 5000)[2] == read_all(JsonLines(str(b)), 5000)[2]
    c = tmp_path / "c.jsonl"
    c.write_bytes(TEXT.replace(b'"n": 1999', b'"n": 2000'))
    da, dc = read_all(JsonLines(str(a)), 5000)[2], read_all(JsonLines(str(c)), 5000)[2]
    assert da[:-1] == dc[:-1] and da[-1] != dc[-1]  # only the chunk with the change (the last) differs


def test_stdin_short_reads_give_the_same_chunks() -> None:
    class Trickle(io.RawIOBase):
        """A pipe that returns at most 7 bytes per read."""

        def __init__(self, data: bytes) -> None:
            self.buf = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
            chunk = self.buf.read(min(7, len(b)))
            b[: len(chunk)] = chunk
            return len(chunk)

    piped = read_all(JsonLines("-", stdin=io.BufferedReader(Trickle(TEXT), buffer_size=8)), 4096)
    plain = read_all(JsonLines("-", stdin=io.BufferedReader(io.BytesIO(TEXT))), 4096)
    assert piped == plain and piped[0] == LINES


def test_last_line_without_newline_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\r\n{"a": 2}')
    lines, numbers, _ = read_all(JsonLines(str(path)), 1 << 20)
    assert lines == ['{"a": 1}\r', '{"a": 2}'] and numbers == [1, 2]


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": "caf\xe9"}\n')
    with pytest.raises(BadInputError, match=r"bad.jsonl: line 3: not UTF-8 text \(invalid continuation byte at byte 11 of the line\)"):
        read_all(JsonLines(str(path)), 1 << 20)


def test_records_name_bad_json_by_line_and_never_recurse(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"op": "insert"}\n\n{"op": \n')
    with pytest.raises(BadInputError, match=r"c.jsonl: line 3: invalid JSON \(Expecting value at column 8\)"):
        read_records(str(path))
    path.write_text('{"op": "insert"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(BadInputError, match="c.jsonl: line 2: JSON nested too deeply"):
        read_records(str(path))
    path.write_text('{"op": "insert"}\n\n{"op": "delete"}\n')
    values, labels, digest = read_records(str(path))
    assert values == [{"op": "insert"}, {"op": "delete"}] and labels == [f"{path}: line 1", f"{path}: line 3"]
    assert read_records(str(path))[2] == digest


def test_missing_file() -> None:
    with pytest.raises(IcebergdoError, match="cannot read /nonexistent.jsonl"):
        JsonLines("/nonexistent.jsonl").open()
