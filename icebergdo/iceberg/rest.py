"""Running on an Iceberg REST catalog (`[catalog] type = "rest"`): ours (`icebergdo serve`), R2 Data Catalog, Polaris, Lakekeeper.

pyiceberg's `RestCatalog` does the protocol (config handshake, OAuth2 client credentials or a
bearer token, commits with requirements); this subclass only returns `AdrTable`s so our writes
keep the ADR layout, and turns "cannot reach / not allowed" into a `StorageError` that names the
URI and never a token. Everything icebergdo keeps beside the tables works through the Iceberg
commit protocol alone on this backend (docs/catalogs.md, "What differs per backend").
"""

from __future__ import annotations

import logging

from pyiceberg.catalog.rest import RestCatalog, TableResponse
from pyiceberg.exceptions import ForbiddenError, OAuthError, RESTError, ServerError, ServiceUnavailableError, UnauthorizedError
from pyiceberg.table import Table
from pyiceberg.typedef import Identifier
from requests import RequestException

from icebergdo.config import Config
from icebergdo.errors import StorageError
from icebergdo.iceberg.catalog import as_adr_table, drop_legacy_provider
from icebergdo.redact import safe_message

log = logging.getLogger(__name__)


class IcebergdoRestCatalog(RestCatalog):
    """pyiceberg's RestCatalog returning `AdrTable`s."""

    def _response_to_table(self, identifier_tuple: tuple[str, ...], table_response: TableResponse) -> Table:
        return as_adr_table(super()._response_to_table(identifier_tuple, table_response))

    def load_table(self, identifier: str | Identifier) -> Table:
        return drop_legacy_provider(self, super().load_table(identifier))


def open_rest_catalog(config: Config) -> IcebergdoRestCatalog:
    """Connect (GET /v1/config, and a token request with client credentials) or raise StorageError."""
    try:
        return IcebergdoRestCatalog(config.catalog_name, **config.catalog_properties())
    except (RequestException, RESTError, OAuthError, UnauthorizedError, ForbiddenError, ServerError, ServiceUnavailableError) as e:
        raise StorageError(f"cannot open REST catalog {config.catalog_uri}: {safe_message(e, config.secrets())}") from None
