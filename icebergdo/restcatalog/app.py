"""The Iceberg REST catalog protocol over our catalog: what DuckDB, Spark, Trino and pyiceberg call.

Every route of `rest-catalog-open-api.yaml` that engines use is here, on pyiceberg's own models
(`CreateTableRequest`, `CommitTableRequest` with its `TableRequirement`/`TableUpdate` unions,
`TableResponse`, `CommitTableResponse`, `ConfigResponse`...): nothing of the protocol is declared twice.

Invariants:

- One catalog row per table, whoever commits. A REST commit runs `SqlCatalog.commit_table` (the
  compare-and-swap on the row's metadata location) under the same per-table commit lock as our
  writer (`icebergdo.commit.commit_lock`), so REST clients, pyiceberg and icebergdo queue on one
  lock and can never overwrite each other: a client whose requirements no longer hold gets 409.
- `POST /v1/transactions/commit` is atomic: `IcebergdoCatalog.commit_changes` swaps every row in
  one database transaction, taking the tables' commit locks in name order (no deadlock).
- Tables created here get our defaults (ADR layout properties when the client gives no location,
  commit retries, zstd); properties the client sets win.
- Storage: table config tells clients the S3 endpoint, region and addressing style, never our keys
  (clients bring their own; `[serve.catalog] client_config` adds anything else).

The handlers block (database, object store), so each runs in Starlette's thread pool.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.rest import (
    ConfigResponse,
    CreateTableRequest,
    ListNamespaceResponse,
    ListTableResponseEntry,
    ListTablesResponse,
    NamespaceResponse,
    RegisterTableRequest,
    TableResponse,
    UpdateNamespacePropertiesResponse,
)
from pyiceberg.catalog.rest.response import OAuthErrorResponse
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC
from pyiceberg.table import CommitTableRequest, CommitTableResponse
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.sorting import UNSORTED_SORT_ORDER
from pyiceberg.table.update import AssertCreate, SetPropertiesUpdate, TableUpdate
from pyiceberg.typedef import IcebergBaseModel, Identifier
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from icebergdo import commit, layout
from icebergdo.config import Config
from icebergdo.errors import BadInputError, ConfigError
from icebergdo.iceberg.catalog import IcebergdoCatalog, sql_catalog
from icebergdo.restcatalog.auth import READ_METHODS, Authenticator, AuthError, Principal
from icebergdo.restcatalog.errors import RestError, error_response, to_response
from icebergdo.restcatalog.settings import RestServeSettings
from icebergdo.tables import DEFAULT_TABLE_PROPERTIES, Tables

log = logging.getLogger(__name__)

NAMESPACE_SEPARATOR = "\x1f"

# What we serve, as the spec names endpoints (pyiceberg, Java and DuckDB check this list).
ENDPOINTS = [
    "GET /v1/{prefix}/namespaces",
    "POST /v1/{prefix}/namespaces",
    "GET /v1/{prefix}/namespaces/{namespace}",
    "HEAD /v1/{prefix}/namespaces/{namespace}",
    "DELETE /v1/{prefix}/namespaces/{namespace}",
    "POST /v1/{prefix}/namespaces/{namespace}/properties",
    "GET /v1/{prefix}/namespaces/{namespace}/tables",
    "POST /v1/{prefix}/namespaces/{namespace}/tables",
    "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "DELETE /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/register",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
    "POST /v1/{prefix}/tables/rename",
    "POST /v1/{prefix}/transactions/commit",
]


def storage_config(config: Config, extra: dict[str, str]) -> dict[str, str]:
    """What a client needs to reach the files besides its own keys: endpoint, region, addressing style."""
    out: dict[str, str] = {}
    s3 = config.s3
    if s3 is not None:
        if s3.endpoint:
            out["s3.endpoint"] = s3.endpoint
        out["s3.region"] = s3.region
        out["client.region"] = s3.region
        out["s3.path-style-access"] = str(s3.path_style).lower()  # Java S3FileIO
        out["s3.force-virtual-addressing"] = str(not s3.path_style).lower()  # pyiceberg
    out.update(extra)
    return out


class RestCatalogService:
    """The handlers' logic, on a `Tables` (its catalog and config), independent of HTTP."""

    def __init__(self, tables: Tables, settings: RestServeSettings) -> None:
        self.tables = tables
        self.catalog: Catalog = tables.catalog
        self.config = tables.config
        self.settings = settings
        self.table_config = storage_config(self.config, settings.client_config)

    # -- config --------------------------------------------------------------------------------
    def get_config(self) -> JSONResponse:
        """The spec's CatalogConfig (pyiceberg's `ConfigResponse` would serialise endpoints as objects)."""
        body = {"defaults": self.table_config, "overrides": {"warehouse": self.config.warehouse}, "endpoints": ENDPOINTS}
        ConfigResponse.model_validate(body)  # what clients parse must parse
        return JSONResponse(body)

    # -- namespaces ----------------------------------------------------------------------------
    def list_namespaces(self, parent: str | None) -> ListNamespaceResponse:
        if parent:  # one level only: nothing below a namespace
            self.load_namespace(parent)
            return ListNamespaceResponse(namespaces=[])
        return ListNamespaceResponse(namespaces=sorted(self.catalog.list_namespaces()))

    def create_namespace(self, body: dict[str, Any]) -> NamespaceResponse:
        parts = body.get("namespace")
        if not isinstance(parts, list) or len(parts) != 1 or not isinstance(parts[0], str):
            raise RestError(400, "BadRequestException", "namespace must be a list with one name (nested namespaces are not supported)")
        name = layout.validate_name(parts[0], "namespace")
        props = {str(k): str(v) for k, v in (body.get("properties") or {}).items()}
        self.catalog.create_namespace(name, props)
        return NamespaceResponse(namespace=(name,), properties=self.catalog.load_namespace_properties(name))

    def load_namespace(self, namespace: str) -> NamespaceResponse:
        props = self.catalog.load_namespace_properties(namespace)
        return NamespaceResponse(namespace=(namespace,), properties=props)

    def drop_namespace(self, namespace: str) -> None:
        self.catalog.drop_namespace(namespace)

    def update_namespace_properties(self, namespace: str, body: dict[str, Any]) -> UpdateNamespacePropertiesResponse:
        removals = {str(k) for k in body.get("removals") or []}
        updates = {str(k): str(v) for k, v in (body.get("updates") or {}).items()}
        summary = self.catalog.update_namespace_properties(namespace, removals, updates)
        return UpdateNamespacePropertiesResponse(removed=summary.removed, updated=summary.updated, missing=summary.missing)

    # -- tables --------------------------------------------------------------------------------
    def list_tables(self, namespace: str) -> ListTablesResponse:
        idents = self.catalog.list_tables(namespace)
        return ListTablesResponse(identifiers=[ListTableResponseEntry(namespace=ident[:-1], name=ident[-1]) for ident in sorted(idents)])

    def default_properties(self, identifier: Identifier, client_location: str | None) -> dict[str, str]:
        """Our defaults for a table created through REST: retries, zstd, and (no client location) the ADR layout."""
        props = dict(DEFAULT_TABLE_PROPERTIES)
        if not client_location:
            ns, name = identifier
            props.update(layout.table_properties(self.config.warehouse, f"{ns}.{name}", f"{ns}/{name}/data"))
        return props

    def create_table(self, namespace: str, body: dict[str, Any]) -> TableResponse:
        for key in ("location", "partition-spec", "write-order"):
            body.setdefault(key, None)
        request = CreateTableRequest.model_validate(body)
        identifier = (namespace, layout.validate_name(request.name, "table"))
        if not self.catalog.namespace_exists(namespace):
            raise NoSuchNamespaceError(f"Namespace does not exist: {namespace}")
        location = request.location or layout.table_location(self.config.warehouse, ".".join(identifier))
        properties = {**self.default_properties(identifier, request.location), **request.properties}
        spec = request.partition_spec or UNPARTITIONED_PARTITION_SPEC
        order = request.write_order or UNSORTED_SORT_ORDER
        if request.stage_create:
            if self.catalog.table_exists(identifier):
                from pyiceberg.exceptions import TableAlreadyExistsError

                raise TableAlreadyExistsError(f"Table {'.'.join(identifier)} already exists")
            staged = self.catalog._create_staged_table(  # type: ignore[attr-defined]
                identifier, request.table_schema, location, spec, order, properties)
            return _table_response(None, staged.metadata, self.table_config)
        table = self.catalog.create_table(
            identifier, schema=request.table_schema, location=location, partition_spec=spec, sort_order=order, properties=properties
        )
        return _table_response(table.metadata_location, table.metadata, self.table_config)

    def load_table(self, identifier: Identifier) -> TableResponse | Response:
        """LoadTableResult. From our SQL catalog the metadata file's own bytes are the `metadata` field:
        it is the table metadata JSON the spec asks for, and parsing and re-serialising it would be
        most of the cost for a table with a long history (a 1,000-snapshot table: ~0.7 MB)."""
        if isinstance(self.catalog, IcebergdoCatalog):
            location = self.catalog.metadata_location_of(identifier)
            raw = self.catalog.metadata_bytes(location)
            if raw is not None and layout.LEGACY_PROVIDER_KEY.encode() not in raw:  # legacy tables take the path that cleans them up
                head = json.dumps({"metadata-location": location, "config": self.table_config})[:-1].encode()
                return Response(head + b', "metadata": ' + raw + b"}", media_type="application/json")
        table = self.catalog.load_table(identifier)
        return _table_response(table.metadata_location, table.metadata, self.table_config)

    def table_exists(self, identifier: Identifier) -> bool:
        return self.catalog.table_exists(identifier)

    def drop_table(self, identifier: Identifier, purge: bool) -> None:
        if purge:
            self.catalog.purge_table(identifier)
        else:
            self.catalog.drop_table(identifier)

    def register_table(self, namespace: str, body: dict[str, Any]) -> TableResponse:
        body.setdefault("overwrite", False)
        request = RegisterTableRequest.model_validate(body)
        identifier = (namespace, layout.validate_name(request.name, "table"))
        table = self.catalog.register_table(identifier, request.metadata_location, overwrite=request.overwrite)
        return _table_response(table.metadata_location, table.metadata, self.table_config)

    def rename_table(self, body: dict[str, Any]) -> None:
        source, dest = _identifier(body.get("source"), "source"), _identifier(body.get("destination"), "destination")
        self.catalog.rename_table(source, dest)

    # -- commits -------------------------------------------------------------------------------
    def _request(self, body: dict[str, Any], identifier: Identifier | None = None) -> tuple[Identifier, CommitTableRequest]:
        if identifier is not None and not body.get("identifier"):
            body["identifier"] = {"namespace": list(identifier[:-1]), "name": identifier[-1]}
        request = CommitTableRequest.model_validate(body)
        found = (*request.identifier.namespace.root, request.identifier.name)
        if identifier is not None and tuple(found) != tuple(identifier):
            raise RestError(400, "BadRequestException", f"identifier {'.'.join(found)} in the body does not match the path {'.'.join(identifier)}")
        if len(found) != 2:
            raise RestError(400, "BadRequestException", f"invalid table identifier {'.'.join(found)!r}: expected namespace.table")
        return (layout.validate_name(found[0], "namespace"), layout.validate_name(found[1], "table")), request

    def _with_defaults(self, identifier: Identifier, request: CommitTableRequest) -> tuple[TableUpdate, ...]:
        """A create-by-commit (`assert-create`) gets our default properties for every key the client leaves unset."""
        if not any(isinstance(r, AssertCreate) for r in request.requirements):
            return request.updates
        client_keys = {k for u in request.updates if isinstance(u, SetPropertiesUpdate) for k in u.updates}
        location = next((getattr(u, "location", None) for u in request.updates if getattr(u, "action", "") == "set-location"), None)
        ours_default = layout.table_location(self.config.warehouse, ".".join(identifier))
        client_location = location if location and location.rstrip("/") != ours_default else None
        missing = {k: v for k, v in self.default_properties(identifier, client_location).items() if k not in client_keys}
        return (*request.updates, SetPropertiesUpdate(updates=missing)) if missing else request.updates

    @contextlib.contextmanager
    def _locked(self, identifiers: list[Identifier]) -> Iterator[None]:
        """The per-table commit locks our writer takes, in name order (two transactions cannot deadlock)."""
        with contextlib.ExitStack() as stack:
            for ident in sorted(set(identifiers)):
                stack.enter_context(commit.commit_lock(self.catalog, ".".join(ident))())
            yield

    def commit_table(self, identifier: Identifier, body: dict[str, Any]) -> CommitTableResponse:
        identifier, request = self._request(body, identifier)
        updates = self._with_defaults(identifier, request)
        catalog = sql_catalog(self.catalog, "the REST catalog server")
        with self._locked([identifier]):
            return catalog.commit_identifier(identifier, request.requirements, updates)

    def commit_transaction(self, body: dict[str, Any]) -> None:
        changes = body.get("table-changes")
        if not isinstance(changes, list) or not changes:
            raise RestError(400, "BadRequestException", "table-changes must be a non-empty list")
        parsed = [self._request(change) for change in changes]
        idents = [ident for ident, _ in parsed]
        if len(set(idents)) != len(idents):
            raise RestError(400, "BadRequestException", "a table appears twice in one transaction")
        catalog: IcebergdoCatalog = sql_catalog(self.catalog, "an atomic multi-table commit")
        with self._locked(idents):
            catalog.commit_changes([(ident, req.requirements, self._with_defaults(ident, req)) for ident, req in parsed])


def _table_response(metadata_location: str | None, metadata: TableMetadata, config: dict[str, str]) -> TableResponse:
    return TableResponse.model_validate({"metadata-location": metadata_location, "metadata": metadata, "config": config})


def _identifier(value: Any, what: str) -> Identifier:
    if not isinstance(value, dict) or not isinstance(value.get("namespace"), list) or len(value["namespace"]) != 1:
        raise RestError(400, "BadRequestException", f"{what} must be {{namespace: [name], name: table}}")
    return (layout.validate_name(str(value["namespace"][0]), "namespace"), layout.validate_name(str(value.get("name")), "table"))


def _namespace(raw: str) -> str:
    """The path's namespace: one level (the spec's separator is 0x1F; we serve no nested namespaces)."""
    parts = raw.split(NAMESPACE_SEPARATOR)
    if len(parts) != 1:
        raise RestError(400, "BadRequestException", f"nested namespace {'.'.join(parts)!r} is not supported")
    try:
        return layout.validate_name(parts[0], "namespace")
    except BadInputError as e:
        raise RestError(400, "BadRequestException", str(e)) from None


def _json(model: IcebergBaseModel | TableMetadata, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


Handler = Callable[[Request, Principal], Awaitable[Response]]


def rest_catalog_app(lh: Tables, settings: Any = None) -> Starlette:
    """The REST catalog as an ASGI app; mount it anywhere (`icebergdo serve` puts it at /catalog).

    `settings`: a `RestServeSettings`, the ingest service's `Settings` (see `RestServeSettings.coerce`),
    or None for `[serve.catalog]` of the lakehouse's config. Needs credentials (tokens or clients)
    or an explicit `anonymous` scope: a catalog nobody may use is a mistake.
    """
    settings = RestServeSettings.coerce(settings, lh.config)
    if not settings.has_credentials and settings.anonymous is None:
        raise ConfigError(
            f"{lh.config.source}: [serve.catalog] has no tokens or clients and anonymous = 'none': "
            "nobody could use the catalog (`icebergdo attach token` makes a token)"
        )
    service = RestCatalogService(lh, settings)
    auth = Authenticator(settings)
    secrets = lh.config.secrets()

    def endpoint(fn: Callable[..., Any], *, commit_call: bool = False, status: int = 200, scope: str | None = None) -> Callable[[Request], Awaitable[Response]]:
        """Authenticate, authorise, run `fn(request data)` in the thread pool, map errors to the spec's model."""

        async def handle(request: Request) -> Response:
            try:
                principal = auth.principal(request.headers.get("authorization"))
            except AuthError as e:
                return to_response(e, secrets)
            needed = scope or ("read" if request.method in READ_METHODS else "write")
            if needed == "write" and not principal.may_write():
                return error_response(403, "ForbiddenException", f"{principal.name} has read-only access: {request.method} is not allowed")
            try:
                body: dict[str, Any] = {}
                if request.method in ("POST", "PUT"):
                    raw = await request.body()
                    if raw:
                        try:
                            body = json.loads(raw)
                        except ValueError:
                            raise RestError(400, "BadRequestException", "request body is not valid JSON") from None
                        if not isinstance(body, dict):
                            raise RestError(400, "BadRequestException", "request body must be a JSON object")
                result = await run_in_threadpool(fn, request, body)
            except Exception as e:  # noqa: BLE001 - every failure becomes the spec's error model
                return to_response(e, secrets, commit=commit_call and request.method == "POST")
            if result is None:
                return Response(status_code=204)
            if isinstance(result, Response):
                return result
            return _json(result, status)

        return handle

    def ns(request: Request) -> str:
        return _namespace(request.path_params["namespace"])

    def ident(request: Request) -> Identifier:
        try:
            table = layout.validate_name(request.path_params["table"], "table")
        except BadInputError as e:
            raise RestError(400, "BadRequestException", str(e)) from None
        return (ns(request), table)

    def exists(found: bool) -> Response:
        return Response(status_code=204 if found else 404)

    def namespace_head(request: Request, _: Any) -> Response:
        return exists(service.catalog.namespace_exists(ns(request)))

    def table_route(request: Request, body: dict[str, Any]) -> Any:
        if request.method == "GET":
            return service.load_table(ident(request))
        if request.method == "HEAD":
            return exists(service.table_exists(ident(request)))
        if request.method == "DELETE":
            service.drop_table(ident(request), request.query_params.get("purgeRequested", "false").lower() == "true")
            return None
        return service.commit_table(ident(request), body)

    def namespace_route(request: Request, body: dict[str, Any]) -> Any:
        if request.method == "HEAD":
            return namespace_head(request, body)
        if request.method == "DELETE":
            service.drop_namespace(ns(request))
            return None
        return service.load_namespace(ns(request))

    def list_or_create_tables(request: Request, body: dict[str, Any]) -> Any:
        if request.method == "POST":
            return service.create_table(ns(request), body)
        return service.list_tables(ns(request))

    def list_or_create_namespaces(request: Request, body: dict[str, Any]) -> Any:
        if request.method == "POST":
            return service.create_namespace(body)
        return service.list_namespaces(request.query_params.get("parent"))

    async def token_endpoint(request: Request) -> Response:
        """OAuth2 client credentials and token exchange (RFC 6749 / 8693 form posts)."""
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
        grant = form.get("grant_type", "")
        try:
            if grant == "client_credentials":
                client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
                if not client_id and (basic := request.headers.get("authorization", "")).lower().startswith("basic "):
                    import base64

                    client_id, _, client_secret = base64.b64decode(basic[6:]).decode(errors="replace").partition(":")
                token = auth.client_credentials(client_id, client_secret, form.get("scope"))
            elif grant == "urn:ietf:params:oauth:grant-type:token-exchange":
                token = auth.exchange(form.get("subject_token", ""), form.get("scope"))
            else:
                return JSONResponse(OAuthErrorResponse(error="unsupported_grant_type", error_description=f"grant_type {grant!r} is not supported").model_dump(), status_code=400)
        except AuthError as e:
            return JSONResponse(OAuthErrorResponse(error=e.oauth_error or "invalid_client", error_description=str(e)).model_dump(), status_code=401)  # type: ignore[arg-type]
        return JSONResponse(token, headers={"Cache-Control": "no-store"})

    routes = [
        Route("/v1/config", endpoint(lambda r, b: service.get_config(), scope="read"), methods=["GET"]),
        Route("/v1/oauth/tokens", token_endpoint, methods=["POST"]),
        Route("/v1/namespaces", endpoint(list_or_create_namespaces), methods=["GET", "POST"]),
        Route("/v1/namespaces/{namespace}", endpoint(namespace_route), methods=["GET", "HEAD", "DELETE"]),
        Route("/v1/namespaces/{namespace}/properties", endpoint(lambda r, b: service.update_namespace_properties(ns(r), b)), methods=["POST"]),
        Route("/v1/namespaces/{namespace}/tables", endpoint(list_or_create_tables), methods=["GET", "POST"]),
        Route("/v1/namespaces/{namespace}/register", endpoint(lambda r, b: service.register_table(ns(r), b)), methods=["POST"]),
        Route("/v1/namespaces/{namespace}/tables/{table}", endpoint(table_route, commit_call=True), methods=["GET", "HEAD", "POST", "DELETE"]),
        Route("/v1/namespaces/{namespace}/tables/{table}/metrics", endpoint(lambda r, b: None, scope="read"), methods=["POST"]),
        Route("/v1/namespaces/{namespace}/views", endpoint(lambda r, b: JSONResponse({"identifiers": []})), methods=["GET"]),
        Route("/v1/tables/rename", endpoint(lambda r, b: service.rename_table(b)), methods=["POST"]),
        Route("/v1/transactions/commit", endpoint(lambda r, b: service.commit_transaction(b), commit_call=True), methods=["POST"]),
    ]
    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        kind = "NotFoundException" if status == 404 else "UnsupportedOperationException"
        return error_response(status, kind, f"{request.method} {request.url.path} is not served by this catalog")

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.rest_catalog = service
    return app


__all__ = ["ENDPOINTS", "NoSuchTableError", "RestCatalogService", "rest_catalog_app", "storage_config"]
