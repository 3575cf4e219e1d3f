"""Shared fixtures: every lakehouse test runs on two real backends, some on a third.

- `local`: a folder warehouse with an embedded SQLite catalog;
- `s3pg`:  a SeaweedFS S3 warehouse (127.0.0.1) with a PostgreSQL catalog (private cluster, 127.0.0.1).
- `rest`:  `[catalog] type = "rest"`: icebergdo as a client of our REST catalog server (uvicorn on
  127.0.0.1, a fresh folder + SQLite lakehouse behind it, a bearer token). Opt-in, to keep CI time:
  a module (`pytestmark = pytest.mark.rest_backend`) or a test marked `rest_backend` runs on it
  too; `sql_catalog_only` takes a test of such a module off it (it inspects the SQL catalog itself).

The servers are started once per test session by `tests/servers.py` and stopped at its end.
A missing server binary is an error, never a skip.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from icebergdo import Config, Lakehouse
from tests import servers

BACKENDS = ["local", "s3pg"]
REST_BACKEND = "rest"
_counter = itertools.count()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        rest = metafunc.definition.get_closest_marker("rest_backend") and not metafunc.definition.get_closest_marker("sql_catalog_only")
        metafunc.parametrize("backend", BACKENDS + ([REST_BACKEND] if rest else []), indirect=True)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.SeaweedFS]:
    server = servers.start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Postgres]:
    server = servers.start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.stop()


def make_config(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Config:
    """A fresh, empty lakehouse on `backend` (a new bucket prefix and database for s3pg)."""
    if backend == "local":
        return Config.from_home(tmp_path / "lakehouse")
    if backend == REST_BACKEND:
        return rest_config(request, tmp_path)
    s3: servers.SeaweedFS = request.getfixturevalue("seaweedfs")
    pg: servers.Postgres = request.getfixturevalue("postgres")
    n = next(_counter)
    # One bucket, a prefix per test: every new bucket is a new SeaweedFS collection with volumes of
    # its own, and dozens of them exhaust `weed mini`'s volume slots (seen as 500s on upload).
    bucket = s3.create_bucket("icebergdo-tests")
    prefix = f"t{n}-{tmp_path.name}".lower().replace("_", "-")
    return Config.from_dict(
        {
            "catalog": {"uri": pg.create_database(f"cat{n}"), "warehouse": f"s3://{bucket}/{prefix}"},
            "s3": s3.s3_settings(),
        },
        source=f"test s3pg #{n}",
    )


def rest_config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """A `type = "rest"` config on a REST catalog server started for this test (stopped at its end)."""
    from icebergdo.restcatalog.local import LocalCatalogServer
    from icebergdo.tables import Tables

    served = Config.from_home(tmp_path / "served")
    server = LocalCatalogServer(Tables(served)).start()
    request.addfinalizer(server.stop)
    return Config.from_dict(
        {"catalog": {"type": "rest", "uri": server.uri, "token": server.token, "warehouse": served.warehouse}},
        source=f"test rest {server.uri}",
    )


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def config(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Config:
    return make_config(request, backend, tmp_path)


@pytest.fixture
def lh(config: Config) -> Lakehouse:
    return Lakehouse.open(config)
