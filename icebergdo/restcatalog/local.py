"""The REST catalog on 127.0.0.1 in a thread of this process: for `lh.duckdb()`, tests and benchmarks.

uvicorn serves the same app `icebergdo serve` mounts, at the same `/catalog` prefix, on a free
port of the loopback interface only, with a fresh random write token that never leaves the
process (it is handed to DuckDB as a secret in memory).

- `LocalCatalogServer(tables)`: one server for one lakehouse; `stop()` ends it.
- `local_endpoint(tables)`: what `lh.duckdb()` uses. One server per process serves every
  lakehouse that asks, each under its own random path (`/catalog/<key>`); it holds a lakehouse
  only weakly, so a lakehouse that is dropped is unregistered and nothing accumulates.
"""

from __future__ import annotations

import atexit
import secrets
import threading
import time
import weakref
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount

from icebergdo.errors import StorageError
from icebergdo.restcatalog.app import rest_catalog_app
from icebergdo.restcatalog.settings import RestServeSettings, new_token
from icebergdo.tables import Tables

MOUNT = "/catalog"


def mounted(app: Any) -> Starlette:
    """`app` under `/catalog`, as `icebergdo serve` mounts it."""
    return Starlette(routes=[Mount(MOUNT, app=app)])


class ThreadServer:
    """uvicorn serving an ASGI app from a daemon thread, on `host` (loopback) and a free port by default."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.host, self.port = app, host, port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> ThreadServer:
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


class LocalCatalogServer(ThreadServer):
    """`with LocalCatalogServer(lh) as server:` → `server.uri` (…/catalog) and `server.token` (write scope)."""

    def __init__(self, tables: Tables, settings: RestServeSettings | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.token = new_token()
        self.settings = settings or RestServeSettings.with_token(self.token)
        super().__init__(mounted(rest_catalog_app(tables, self.settings)), host=host, port=port)

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}{MOUNT}"

    def start(self, timeout: float = 10.0) -> LocalCatalogServer:
        super().start(timeout)
        return self

    def __enter__(self) -> LocalCatalogServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Hub:
    """One uvicorn thread dispatching `/catalog/<key>/…` to the app registered under `key`."""

    def __init__(self) -> None:
        self.token = new_token()
        self.settings = RestServeSettings.with_token(self.token)
        self.apps: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.server: ThreadServer | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        parts = scope.get("path", "").split("/", 3)  # ['', 'catalog', key, rest]
        app = self.apps.get(parts[2]) if len(parts) > 2 and parts[1] == MOUNT.strip("/") else None
        if app is None or scope["type"] != "http":
            from starlette.responses import JSONResponse

            from icebergdo.restcatalog.errors import error_body

            await JSONResponse(error_body(404, "NotFoundException", "no such catalog (its lakehouse was closed)"), status_code=404)(scope, receive, send)
            return
        child = dict(scope, root_path=scope.get("root_path", "") + f"{MOUNT}/{parts[2]}")
        await app(child, receive, send)

    def register(self, tables: Tables) -> str:
        key = secrets.token_hex(8)
        # The app sees the lakehouse through a weak proxy: a dropped lakehouse is collected and unregistered.
        app = rest_catalog_app(weakref.proxy(tables), self.settings)
        with self.lock:
            self.apps[key] = app
            if self.server is None:
                self.server = ThreadServer(self).start()
        weakref.finalize(tables, self.apps.pop, key, None)
        return f"http://127.0.0.1:{self.server.port}{MOUNT}/{key}"


_hub: _Hub | None = None
_hub_lock = threading.Lock()


def local_endpoint(tables: Tables) -> tuple[str, str]:
    """(REST URI, bearer token) of an in-process catalog serving `tables`; one per lakehouse object, reused."""
    global _hub
    cached = getattr(tables, "_local_catalog_endpoint", None)
    if cached is not None:
        return cached
    with _hub_lock:
        if _hub is None:
            _hub = _Hub()
        hub = _hub
    endpoint = (hub.register(tables), hub.token)
    tables._local_catalog_endpoint = endpoint  # type: ignore[attr-defined]
    return endpoint
