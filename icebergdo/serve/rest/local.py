"""The REST catalog on 127.0.0.1 in a thread of this process: for `lh.duckdb()`, tests and benchmarks.

uvicorn serves the same app `icebergdo serve` mounts, at the same `/catalog` prefix, on a free
port of the loopback interface only, with a fresh random write token that never leaves the
process (it is handed to DuckDB as a secret in memory). `stop()` ends it; so does interpreter exit.
"""

from __future__ import annotations

import atexit
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount

from icebergdo.errors import StorageError
from icebergdo.serve.rest.app import rest_catalog_app
from icebergdo.serve.rest.settings import RestServeSettings, new_token
from icebergdo.tables import Tables

MOUNT = "/catalog"


def mounted(app: Any) -> Starlette:
    """`app` under `/catalog`, as `icebergdo serve` mounts it."""
    return Starlette(routes=[Mount(MOUNT, app=app)])


class LocalCatalogServer:
    """`with LocalCatalogServer(lh) as server:` → `server.uri` (…/catalog) and `server.token` (write scope)."""

    def __init__(self, tables: Tables, settings: RestServeSettings | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.token = new_token()
        self.settings = settings or RestServeSettings.with_token(self.token)
        self.host, self.port = host, port
        self.app = mounted(rest_catalog_app(tables, self.settings))
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}{MOUNT}"

    def start(self, timeout: float = 10.0) -> LocalCatalogServer:
        import uvicorn

        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="icebergdo-rest-catalog", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise StorageError(f"the in-process REST catalog did not start on {self.host}:{self.port or 'a free port'}")
            time.sleep(0.005)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> LocalCatalogServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
