"""`icebergdo serve`: the ingest service — events, webhooks, RPC records, CDC changes and WebSocket
streams into `events.raw`, each acknowledged only once durable in the write-ahead log.

    settings.py    the [serve] config section: listen address, tokens (hashed), webhooks, limits
    app.py         the Starlette app (`create_app(lh, settings)`), its routes and checks
    ingest.py      the one durable writer, fed in groups; 202 only after the WAL fsync
    records.py     what each route accepts → validated events.raw rows
    bodies.py      body limit, gzip, JSON / NDJSON
    signatures.py  Stripe, GitHub, Standard Webhooks (Svix), generic HMAC verification
    limits.py      idempotency keys and per-source rate limits
    health.py      readiness probes (catalog, storage, writer)
    metrics.py     Prometheus metrics
    maintainer.py  in-process maintenance on a schedule
    openapi.py     /openapi.json
    server.py      uvicorn, graceful SIGTERM, exit code

The Iceberg REST catalog (`icebergdo.restcatalog`) is mounted at /catalog when [serve.catalog] enables it.

Nothing below the facade imports this package (docs/serve.md).
"""

from icebergdo.serve.app import create_app, mount_catalog
from icebergdo.serve.settings import Settings, hash_token

__all__ = ["Settings", "create_app", "hash_token", "mount_catalog"]
