"""Configuration that needs a real catalog: the SQLite catalog runs in WAL mode with a busy timeout.

Everything about parsing configs (files, ${ENV} interpolation, redaction) is in tests/unit/test_config.py.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from icebergdo import Lakehouse


def test_sqlite_catalog_uses_wal_and_busy_timeout(tmp_path: Path) -> None:
    lh = Lakehouse.open(tmp_path / "lh")
    lh.events_table()
    with lh.catalog.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000
