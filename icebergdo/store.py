"""The warehouse's object store: listing and deleting files (local folder or S3), path normalisation,
and the one boto3 client factory (timeouts and retries from `[s3]`).

Maintenance compares paths written by different engines (`s3a://` from Spark, `file:/x` from Java,
`file:///x` from pyiceberg), so every comparison goes through `normalise` first. Deletes on S3 are
batched (1000 keys per `DeleteObjects` request) because expiry can free tens of thousands of files.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from icebergdo.config import Config, S3Settings
from icebergdo.errors import ConfigError, StorageError

S3_DELETE_BATCH = 1000
S3_ATTEMPTS = 5


def s3_client(s3: S3Settings, *, attempts: int = S3_ATTEMPTS) -> Any:
    """A boto3 S3 client from the same `[s3]` settings pyiceberg and DuckDB use.

    Connect and read timeouts come from the settings, so a stalled endpoint fails instead of
    hanging; `attempts` bounds botocore's own retries (checks use few, to answer fast).
    """
    import boto3
    from botocore.config import Config as BotoConfig

    endpoint = s3.endpoint if not s3.endpoint or "://" in s3.endpoint else f"https://{s3.endpoint}"
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
        aws_session_token=s3.session_token,
        config=BotoConfig(
            s3={"addressing_style": "path" if s3.path_style else "virtual"},
            connect_timeout=s3.connect_timeout,
            read_timeout=s3.request_timeout,
            retries={"max_attempts": attempts, "mode": "standard"},
        ),
    )


def normalise(path: str) -> str:
    """One spelling per file: `s3a://b/k` → `s3://b/k`, `file:/x`, `/x` → `file:///x`, no `//` or trailing `/`."""
    path = path.strip()
    parsed = urlparse(path)
    scheme = parsed.scheme.lower()
    if scheme in ("s3", "s3a", "s3n"):
        key = posixpath.normpath("/" + parsed.path.lstrip("/")) if parsed.path not in ("", "/") else ""
        return f"s3://{parsed.netloc}{key}".rstrip("/")
    if scheme in ("file", ""):
        local = unquote(parsed.path if scheme == "file" else path)
        if scheme == "file" and parsed.netloc not in ("", "localhost"):
            local = f"/{parsed.netloc}{local}"
        local = posixpath.normpath(local)
        if local.startswith("//"):
            local = "/" + local.lstrip("/")
        return "file://" + local.rstrip("/") if local != "/" else "file:///"
    return path.rstrip("/")


def is_under(path: str, prefix: str) -> bool:
    """True when `path` is `prefix` itself or inside it (segment-wise: `a/data2` is not under `a/data`)."""
    p, q = normalise(path), normalise(prefix)
    return p == q or p.startswith(q + "/")


@dataclass(frozen=True)
class FileInfo:
    """One listed file: normalised path, size in bytes, last-modified time (epoch seconds)."""

    path: str
    size: int
    mtime: float


class Store:
    """The warehouse's object store: list a prefix, delete files. Local folders or S3 (boto3)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._s3: Any = None

    # -- S3 ------------------------------------------------------------------------------------
    @property
    def s3(self) -> Any:
        if self._s3 is None:
            if self.config.s3 is None:
                raise ConfigError(f"{self.config.source}: an s3:// warehouse needs an [s3] table")
            self._s3 = s3_client(self.config.s3)
        return self._s3

    @staticmethod
    def _bucket_key(path: str) -> tuple[str, str]:
        parsed = urlparse(normalise(path))
        return parsed.netloc, parsed.path.lstrip("/")

    # -- API -----------------------------------------------------------------------------------
    def list(self, prefix: str) -> Iterator[FileInfo]:
        """Every file under `prefix` (recursively; a missing prefix lists nothing)."""
        prefix = normalise(prefix)
        if prefix.startswith("s3://"):
            bucket, key = self._bucket_key(prefix)
            paginator = self.s3.get_paginator("list_objects_v2")
            try:
                for page in paginator.paginate(Bucket=bucket, Prefix=key.rstrip("/") + "/"):
                    for obj in page.get("Contents", []):
                        yield FileInfo(f"s3://{bucket}/{obj['Key']}", int(obj["Size"]), obj["LastModified"].timestamp())
            except Exception as e:  # noqa: BLE001 - botocore raises many types; name the prefix
                raise StorageError(f"cannot list {prefix}: {e}") from None
            return
        root = prefix[len("file://"):]
        for folder, _dirs, files in os.walk(root):
            for name in files:
                full = os.path.join(folder, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                yield FileInfo(normalise(full), st.st_size, st.st_mtime)

    def delete(self, paths: Iterable[str]) -> int:
        """Delete files (missing ones count as deleted). Returns how many were removed or already gone."""
        s3_keys: dict[str, list[str]] = {}
        done = 0
        for path in paths:
            path = normalise(path)
            if path.startswith("s3://"):
                bucket, key = self._bucket_key(path)
                s3_keys.setdefault(bucket, []).append(key)
            else:
                try:
                    os.remove(path[len("file://"):])
                except FileNotFoundError:
                    pass
                done += 1
        for bucket, keys in s3_keys.items():
            for i in range(0, len(keys), S3_DELETE_BATCH):
                batch = keys[i : i + S3_DELETE_BATCH]
                try:
                    resp = self.s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
                except Exception as e:  # noqa: BLE001
                    raise StorageError(f"cannot delete from s3://{bucket}: {e}") from None
                errors = resp.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise StorageError(f"s3://{bucket}/{first.get('Key')}: delete refused: {first.get('Code')} {first.get('Message')}")
                done += len(batch)
        return done

    def exists(self, path: str) -> bool:
        path = normalise(path)
        if path.startswith("s3://"):
            bucket, key = self._bucket_key(path)
            try:
                self.s3.head_object(Bucket=bucket, Key=key)
                return True
            except Exception:  # noqa: BLE001
                return False
        return os.path.exists(path[len("file://"):])

    def sizes(self, paths: Iterable[str]) -> dict[str, int]:
        """Sizes of the given files that exist, by listing their folders once (cheap on S3)."""
        wanted = {normalise(p) for p in paths}
        folders = {posixpath.dirname(p) for p in wanted}
        out: dict[str, int] = {}
        for folder in sorted(folders):
            if folder.startswith("s3://"):
                bucket, key = self._bucket_key(folder)
                paginator = self.s3.get_paginator("list_objects_v2")
                for page in paginator.paginate(Bucket=bucket, Prefix=key + "/", Delimiter="/"):
                    for obj in page.get("Contents", []):
                        p = f"s3://{bucket}/{obj['Key']}"
                        if p in wanted:
                            out[p] = int(obj["Size"])
            else:
                root = folder[len("file://"):]
                try:
                    entries = list(os.scandir(root))
                except FileNotFoundError:
                    continue
                for entry in entries:
                    p = normalise(entry.path)
                    if p in wanted and entry.is_file():
                        out[p] = entry.stat().st_size
        return out
