"""Reading JSON lines: files or stdin, plain, gzip or zstd, in bounded chunks, with line numbers.

One reader for `icebergdo ingest` and `icebergdo cdc apply`, so both name a bad line the same way:
`events.jsonl: line 17: invalid JSON (Expecting value at column 5)`.

- **Bounded memory**: the input is read in blocks of `chunk_bytes` (decompressed), each cut at its
  last newline; the rest of the block starts the next chunk. Nothing holds more than one chunk.
- **Deterministic chunks**: a chunk is always exactly `chunk_bytes` of input (short reads from a pipe
  are completed), so the same input is always cut at the same lines; together with the running
  content hash (`Chunk.digest`, BLAKE2b of every byte up to the chunk's end) this gives `ingest`
  its input identity for idempotent re-runs.
- **Compression** is recognised by its magic bytes, not the file name (`.gz`, `.zst`, and stdin too).
- **Lines**: a chunk's text is split into an Arrow string array with one vectorised kernel; blank
  lines are dropped and every remaining line keeps its 1-based line number. Text that is not UTF-8
  is reported with the line (and the byte within it), not only a byte offset.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc

from icebergdo.errors import BadInputError, IcebergdoError

DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}


@dataclass
class Chunk:
    """Whole lines of the input: text, 1-based line numbers of the non-blank ones, and where we are."""

    lines: pa.Array  # string: the non-blank lines (without the newline)
    numbers: pa.Array  # int64: their line numbers
    first_line: int  # the number of the chunk's first line (blank or not)
    last_line: int  # the number of its last line
    digest: str  # BLAKE2b of the input's bytes up to the end of this chunk
    index: int  # 0, 1, 2, ...
    input_bytes: int  # bytes of the (possibly compressed) input consumed so far (for progress)
    nbytes: int  # decompressed bytes in this chunk


class JsonLines:
    """One input (a path or '-' for stdin). Iterate `chunks()` once; `label` names it in messages."""

    def __init__(self, path: str, *, stdin: IO[bytes] | None = None) -> None:
        self.path = path
        self.label = "stdin" if path == "-" else path
        self._stdin = stdin
        self.size: int | None = None  # bytes on disk, when known (for a progress bar)
        self.compression: str | None = None
        self._raw: Any = None
        self._stream: Any = None
        self._pipe: Any = None  # stdin's Python file, for eager reads

    # -- opening ---------------------------------------------------------------------------
    def open(self) -> JsonLines:
        if self.path == "-":
            src = self._stdin or sys.stdin.buffer
            self._pipe = src
            raw: Any = pa.PythonFile(src, mode="r")
            head = src.peek(4)[:4] if hasattr(src, "peek") else b""
        else:
            try:
                raw = pa.OSFile(self.path, "rb")
                self.size = raw.size()
                head = raw.read(4)
                raw.seek(0)
            except (OSError, pa.ArrowIOError) as e:
                raise IcebergdoError(f"cannot read {self.path}: {getattr(e, 'strerror', None) or e}") from None
        self.compression = next((codec for magic, codec in _MAGIC.items() if head.startswith(magic)), None)
        self._raw = raw
        self._stream = pa.CompressedInputStream(raw, self.compression) if self.compression else raw
        return self

    def close(self) -> None:
        if self._stream is not None and self.path != "-":
            self._stream.close()
            if self._raw is not self._stream:
                self._raw.close()
        self._stream = self._raw = None

    def __enter__(self) -> JsonLines:
        return self.open() if self._stream is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def consumed(self) -> int:
        """Bytes of the underlying file/pipe read so far (compressed bytes for compressed input)."""
        try:
            return int(self._raw.tell()) if self._raw is not None else 0
        except (OSError, pa.ArrowIOError):
            return 0

    def _read(self, n: int, eager: bool = False) -> bytes:
        """Exactly n bytes unless the input ends first (pipes and decompressors return short reads).

        `eager`: whatever a plain pipe has now (at least one byte), for endless streams.
        """
        if eager and self._pipe is not None and self.compression is None and hasattr(self._pipe, "read1"):
            return bytes(self._pipe.read1(n))
        parts, have = [], 0
        while have < n:
            try:
                block = self._stream.read(n - have)
            except (OSError, pa.ArrowIOError, pa.ArrowInvalid) as e:
                raise BadInputError(f"{self.label}: cannot read {self.compression or 'the input'}: {e}") from None
            if not block:
                break
            parts.append(block)
            have += len(block)
        return b"".join(parts)

    # -- chunks ----------------------------------------------------------------------------
    def chunks(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES, *, eager: bool = False) -> Iterator[Chunk]:
        """Chunks of whole lines, each from `chunk_bytes` of decompressed input (one line may make a chunk longer).

        `eager` (endless stdin): a chunk is whatever whole lines have arrived, not a full block.
        """
        if self._stream is None:
            self.open()
        hasher = hashlib.blake2b(digest_size=16)
        carry = b""
        line_no = 1
        index = 0
        while True:
            block = self._read(chunk_bytes, eager)
            data = carry + block
            if not data:
                return
            if block:
                cut = data.rfind(b"\n")
                if cut < 0:
                    carry = data  # a line longer than a block: keep reading
                    continue
                text, carry = data[: cut + 1], data[cut + 1 :]
                hasher.update(text)
            else:  # the end: the last line may lack its newline
                hasher.update(data)
                text, carry = data if data.endswith(b"\n") else data + b"\n", b""
            chunk = self._split(text, line_no, hasher.hexdigest(), index)
            yield chunk
            line_no = chunk.last_line + 1
            index += 1
            if not block:
                return

    def _split(self, text: bytes, first_line: int, digest: str, index: int) -> Chunk:
        try:
            big = pa.array([text], pa.large_binary()).cast(pa.large_string())
        except pa.ArrowInvalid:
            self._not_utf8(text, first_line)
            raise AssertionError("unreachable") from None
        lines = pc.split_pattern(big, "\n").flatten()
        count = len(lines) - 1  # the text ends with a newline: the last piece is empty
        lines = lines.slice(0, count).cast(pa.string())
        numbers = pa.array(range(first_line, first_line + count), pa.int64())
        short = pc.less_equal(pc.binary_length(lines), 64)
        blank = pc.and_(short, pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(pc.if_else(short, lines, ""))), 0))
        if pc.any(blank).as_py():
            keep = pc.invert(blank)
            lines, numbers = lines.filter(keep), numbers.filter(keep)
        return Chunk(lines, numbers, first_line, first_line + count - 1, digest, index, self.consumed(), len(text))

    def _not_utf8(self, text: bytes, first_line: int) -> None:
        for n, line in enumerate(text.split(b"\n"), first_line):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise BadInputError(f"{self.label}: line {n}: not UTF-8 text ({e.reason} at byte {e.start + 1} of the line)") from None
        raise BadInputError(f"{self.label}: not UTF-8 text")


def where(label: str, number: int) -> str:
    """The one way a line is named in messages."""
    return f"{label}: line {number}"


def parse_json(text: str, label: str) -> Any:
    """One line's JSON value; `BadInputError` naming the line for invalid or absurdly nested JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInputError(f"{label}: invalid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise BadInputError(f"{label}: JSON nested too deeply") from None


def read_records(path: str, *, stdin: IO[bytes] | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[list[Any], list[str], str]:
    """Every line of an input parsed as JSON: (values, labels, content digest). For whole-batch readers (`cdc apply`)."""
    values: list[Any] = []
    labels: list[str] = []
    digest = hashlib.blake2b(b"", digest_size=16).hexdigest()
    with JsonLines(path, stdin=stdin) as src:
        for chunk in src.chunks(chunk_bytes):
            digest = chunk.digest
            for text, number in zip(chunk.lines.to_pylist(), chunk.numbers.to_pylist(), strict=True):
                label = where(src.label, number)
                values.append(parse_json(text, label))
                labels.append(label)
    return values, labels, digest
