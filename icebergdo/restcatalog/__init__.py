"""The Iceberg REST catalog, served from our SQL catalog: any engine attaches with one URL.

    app.py       the protocol: routes → `RestCatalogService` (pyiceberg's request/response models)
    auth.py      bearer tokens, OAuth2 client credentials, read/write scopes
    settings.py  `[serve.catalog]`
    errors.py    exceptions → the spec's error model
    local.py     an in-process server on 127.0.0.1 (`lh.duckdb()`, tests, benchmarks)

`rest_catalog_app(lh, settings)` is what `icebergdo serve` mounts at `/catalog`;
`python -m icebergdo.restcatalog --config FILE --port N` runs it alone. docs/catalogs.md.
"""

from icebergdo.restcatalog.app import RestCatalogService, rest_catalog_app, storage_config
from icebergdo.restcatalog.settings import RestServeSettings, new_token, token_hash

__all__ = ["RestCatalogService", "RestServeSettings", "new_token", "rest_catalog_app", "storage_config", "token_hash"]
