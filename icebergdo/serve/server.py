"""Running the app: uvicorn in this process, SIGTERM handled gracefully, an exit code that tells the truth.

On SIGTERM (or SIGINT) uvicorn stops accepting connections, lets the requests in flight finish
(up to `shutdown_timeout`), closes WebSockets with 1012 (service restart: clients resend what was
not acknowledged), then runs the app's shutdown: the writer is flushed, its events committed, its
WAL released. The process exits 0 when everything acknowledged is committed, and with the
storage exit code (4) when the last commit failed (the events stay in the WAL and the next start
commits them).
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import sys

from icebergdo.errors import IcebergdoError, StorageError
from icebergdo.lakehouse import Lakehouse
from icebergdo.redact import safe_message
from icebergdo.serve.app import Service, create_app
from icebergdo.serve.settings import Settings

log = logging.getLogger(__name__)


def run(lh: Lakehouse, settings: Settings) -> int:
    import uvicorn

    app = create_app(lh, settings)
    service: Service = app.state.service
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        ws="websockets-sansio",
        ws_max_size=settings.max_body,
        lifespan="on",
        log_config=None,  # keep the CLI's logging set-up
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
        backlog=2048,
    )
    server = uvicorn.Server(config)
    maintenance = f"every {settings.maintenance_every:g}s" if settings.maintenance else "off"
    print(f"icebergdo serve: http://{settings.host}:{settings.port} (WAL {service.wal_dir}, "
          f"auth {'on' if settings.auth else 'off'}, maintenance {maintenance})", file=sys.stderr, flush=True)
    # uvicorn handles SIGTERM/SIGINT itself and re-raises them once it has shut down; these handlers
    # receive that re-raise, so the process ends here with the exit code below rather than by the signal.
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    secrets = [*lh.config.secrets(), *settings.secrets()]
    if service.startup_error is not None:
        e = service.startup_error
        if isinstance(e, IcebergdoError):
            raise e
        raise StorageError(f"serve: could not start: {safe_message(e, secrets)}") from None
    if not server.started:
        raise IcebergdoError(f"serve: could not listen on {settings.host}:{settings.port} (see the log above)")
    if service.close_error is not None:
        print(f"icebergdo serve: stopped, but not everything was committed: {safe_message(service.close_error, secrets)}",
              file=sys.stderr, flush=True)
        return StorageError.exit_code
    stats = service.ingestor.stats()
    print(f"icebergdo serve: stopped; {stats.flushed if stats else 0:,} event(s) committed by this run", file=sys.stderr, flush=True)
    return 0
