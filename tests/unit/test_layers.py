"""The package's dependency direction holds (the same contract `make lint` checks), and the
facade's factories return real types."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_layer_contract_is_kept() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 kept, 0 broken" in done.stdout


def test_facade_factories_are_typed() -> None:
    from icebergdo.cdc.collection import Collection
    from icebergdo.lakehouse import Lakehouse
    from icebergdo.writer import Writer

    hints = {name: typing.get_type_hints(getattr(Lakehouse, name)).get("return") for name in ("writer", "collection", "maintain")}
    assert hints["writer"] is Writer
    assert hints["collection"] is Collection
    assert hints["maintain"] is not typing.Any


def test_import_icebergdo_is_lazy() -> None:
    code = "import sys, icebergdo, icebergdo.cli; print(sorted(m for m in sys.modules if m.startswith(('pyiceberg', 'pyarrow', 'duckdb'))))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
