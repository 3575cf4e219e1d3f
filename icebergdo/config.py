"""Where the catalog and the warehouse live, read from a home folder or a TOML file.

Everything else (catalog, tables, DuckDB, Spark, maintenance) takes a `Config`
and nothing else, so a lakehouse is fully described by one object.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from icebergdo.errors import BadInputError, ConfigError
from icebergdo.redact import MASK, mask_key, redact_uri, uri_password
from icebergdo.units import parse_duration

DEFAULT_CATALOG_NAME = "icebergdo"
ENV_HOME = "ICEBERGDO_HOME"
ENV_CONFIG = "ICEBERGDO_CONFIG"
CATALOG_TYPES = ("sql", "rest")
# [catalog] keys by catalog type; anything else is a typo we report.
_SQL_KEYS = {"type", "name", "uri", "warehouse", "home"}
_REST_KEYS = {"type", "name", "uri", "warehouse", "location", "token", "client_id", "client_secret", "scope", "oauth2_server_uri", "properties"}
# pyiceberg catalog properties that hold a secret (masked, and scrubbed from messages).
_SECRET_WORDS = ("secret", "token", "password", "credential", "key")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def interpolate(value: Any, *, where: str = "config") -> Any:
    """Replace `${VAR}` / `${VAR:-default}` so secrets stay in the environment, not in files.

    A value interpolated into the userinfo of a URI (`scheme://${USER}:${PASSWORD}@host/…`) is
    percent-encoded, so a password holding `@`, `:`, `/`, `%` or any other character stays one
    password: drivers decode it back, and `icebergdo.redact` finds exactly where it starts and ends.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, where=f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, where=where) for v in value]
    if not isinstance(value, str):
        return value
    userinfo = _userinfo_span(value)

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            text = os.environ[name]
        elif default is not None:
            text = default
        else:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        if userinfo and userinfo[0] <= m.start() and m.end() <= userinfo[1]:
            return quote(text, safe="")
        return text

    return _VAR.sub(sub, value)


def _userinfo_span(template: str) -> tuple[int, int] | None:
    """(start, end) of the userinfo in a URI template, judged with every `${…}` blanked out.

    The authority starts after `scheme://` and ends at the first `/`, `?` or `#`; its userinfo
    ends at the authority's last `@` (RFC 3986, 3.2). None when the text is no URI or has no userinfo.
    """
    m = _URI_SCHEME.match(template)
    if not m:
        return None
    blank = _VAR.sub(lambda v: "x" * len(v.group(0)), template)
    rest = blank[m.end():]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end)
    return (m.end(), m.end() + at) if at >= 0 else None


@dataclass(frozen=True)
class S3Settings:
    """How to reach an S3-compatible store (R2, S3, SeaweedFS, MinIO)."""

    endpoint: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    path_style: bool = True
    # Seconds. A stalled or unreachable endpoint fails instead of hanging a writer forever.
    connect_timeout: float = 5.0
    request_timeout: float = 30.0

    def __repr__(self) -> str:
        return f"S3Settings({self.redacted()})"

    def redacted(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "region": self.region,
            "access_key_id": mask_key(self.access_key_id),
            "secret_access_key": "***" if self.secret_access_key else None,
            "path_style": self.path_style,
        }

    def fileio_properties(self) -> dict[str, str]:
        """pyiceberg FileIO properties. The region is always set: without it pyarrow asks the network."""
        props = {
            "py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO",
            "s3.region": self.region,
            "s3.force-virtual-addressing": str(not self.path_style).lower(),
            "s3.connect-timeout": str(self.connect_timeout),
            "s3.request-timeout": str(self.request_timeout),
        }
        if self.endpoint:
            props["s3.endpoint"] = self.endpoint
        if self.access_key_id:
            props["s3.access-key-id"] = self.access_key_id
        if self.secret_access_key:
            props["s3.secret-access-key"] = self.secret_access_key
        if self.session_token:
            props["s3.session-token"] = self.session_token
        return props


def _seconds(table: dict[str, Any], key: str, default: float, source: str) -> float:
    value = table.get(key, default)
    try:
        seconds = parse_duration(value, where=f"{source}: [s3] {key}")  # 5, "5s", "1m"
    except BadInputError:
        seconds = -1.0
    # At least 1 s: the AWS SDK under pyarrow counts stalls in whole seconds (less means "no limit").
    if seconds < 1:
        raise ConfigError(f"{source}: [s3] {key} must be a number of seconds >= 1 (or a duration such as \"5s\"), got {value!r}")
    return seconds


def _as_bool(value: Any, where: str) -> bool:
    """TOML booleans, or "true"/"false" text (what `${ENV}` interpolation produces)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


@dataclass(frozen=True)
class RestCatalogSettings:
    """`[catalog] type = "rest"`: an Iceberg REST catalog (ours, R2 Data Catalog, Polaris, Lakekeeper, ...).

    `warehouse` is what the catalog calls the warehouse (R2 Data Catalog: `<account>_<bucket>`; ours:
    the storage URI); `Config.warehouse` is where the files live (the ADR layout's root).
    """

    warehouse: str | None = None
    token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    scope: str | None = None
    oauth2_server_uri: str | None = None
    properties: dict[str, str] = field(default_factory=dict, repr=False)  # passed through to pyiceberg

    def catalog_properties(self) -> dict[str, str]:
        """pyiceberg `RestCatalog` properties (see py.iceberg.apache.org, "REST Catalog")."""
        props: dict[str, str] = {"type": "rest"}
        if self.warehouse:
            props["warehouse"] = self.warehouse
        if self.token:
            props["token"] = self.token
        if self.client_id or self.client_secret:
            props["credential"] = f"{self.client_id or ''}:{self.client_secret or ''}"
        if self.scope:
            props["scope"] = self.scope
        if self.oauth2_server_uri:
            props["oauth2-server-uri"] = self.oauth2_server_uri
        props.update(self.properties)
        return props

    def secrets(self) -> list[str]:
        out = [v for v in (self.token, self.client_secret) if v]
        out += [v for k, v in self.properties.items() if v and any(w in k.lower() for w in _SECRET_WORDS) and not k.lower().endswith("key-id")]
        return out

    def redacted(self) -> dict[str, Any]:
        return {
            "warehouse": self.warehouse,
            "token": MASK if self.token else None,
            "client_id": self.client_id,
            "client_secret": MASK if self.client_secret else None,
            "scope": self.scope,
            "properties": {k: (MASK if v in self.secrets() else v) for k, v in self.properties.items()},
        }


@dataclass(frozen=True)
class Config:
    """One lakehouse: a catalog (SQL or REST) plus a warehouse location, and per-feature settings."""

    catalog_uri: str
    warehouse: str
    catalog_name: str = DEFAULT_CATALOG_NAME
    s3: S3Settings | None = None
    home: Path | None = None
    source: str = "defaults"
    sections: dict[str, Any] = field(default_factory=dict)
    catalog_type: str = "sql"
    rest: RestCatalogSettings | None = None

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_home(cls, home: str | os.PathLike[str]) -> Config:
        """The embedded default: `catalog.db` (SQLite) and `warehouse/` inside one folder."""
        path = Path(home).expanduser().resolve()
        return cls(
            catalog_uri=f"sqlite:///{path / 'catalog.db'}",
            warehouse=(path / "warehouse").as_uri(),
            home=path,
            source=f"home {path}",
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Config:
        p = Path(path).expanduser()
        try:
            raw = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
        return cls.from_dict(raw, source=str(p))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "dict") -> Config:
        raw = interpolate(raw, where=source)
        cat = raw.get("catalog") or {}
        if not isinstance(cat, dict):
            raise ConfigError(f"{source}: [catalog] must be a table")
        kind = str(cat.get("type") or "sql").lower()
        if kind not in CATALOG_TYPES:
            raise ConfigError(f"{source}: [catalog] type must be one of {', '.join(CATALOG_TYPES)}, got {cat.get('type')!r}")
        unknown_cat = set(cat) - (_REST_KEYS if kind == "rest" else _SQL_KEYS)
        if unknown_cat:
            raise ConfigError(f"{source}: unknown [catalog] keys for type {kind!r}: {', '.join(sorted(unknown_cat))}")
        rest = None
        home = cat.get("home")
        if kind == "rest":
            rest, uri, warehouse = _rest_settings(cat, source)
        elif home and not cat.get("uri") and not cat.get("warehouse"):
            base = cls.from_home(home)
            uri, warehouse = base.catalog_uri, base.warehouse
        else:
            uri, warehouse = str(cat.get("uri") or ""), str(cat.get("warehouse") or "")
        if not uri:
            raise ConfigError(f"{source}: [catalog] uri is required (e.g. sqlite:///lakehouse/catalog.db)")
        if not warehouse:
            raise ConfigError(f"{source}: [catalog] warehouse is required (file:///path or s3://bucket/prefix)")
        if kind == "sql":
            uri = _absolute_sqlite(uri)
        warehouse = _normalise_warehouse(warehouse, source)
        s3 = None
        s3raw = raw.get("s3")
        if s3raw is not None:
            if not isinstance(s3raw, dict):
                raise ConfigError(f"{source}: [s3] must be a table")
            unknown = set(s3raw) - {
                "endpoint", "region", "access_key_id", "secret_access_key", "session_token", "path_style",
                "connect_timeout", "request_timeout",
            }
            if unknown:
                raise ConfigError(f"{source}: unknown [s3] keys: {', '.join(sorted(unknown))}")
            s3 = S3Settings(
                endpoint=s3raw.get("endpoint") or None,
                region=s3raw.get("region") or "us-east-1",
                access_key_id=s3raw.get("access_key_id") or None,
                secret_access_key=s3raw.get("secret_access_key") or None,
                session_token=s3raw.get("session_token") or None,
                path_style=_as_bool(s3raw.get("path_style", True), f"{source}: [s3] path_style"),
                connect_timeout=_seconds(s3raw, "connect_timeout", 5.0, source),
                request_timeout=_seconds(s3raw, "request_timeout", 30.0, source),
            )
        elif warehouse.startswith("s3://"):
            s3 = S3Settings()
        sections = {k: v for k, v in raw.items() if k not in ("catalog", "s3")}
        return cls(
            catalog_uri=uri,
            warehouse=warehouse,
            catalog_name=str(cat.get("name") or DEFAULT_CATALOG_NAME),
            s3=s3,
            home=Path(home).resolve() if home and kind == "sql" else None,
            source=source,
            sections=sections,
            catalog_type=kind,
            rest=rest,
        )

    @classmethod
    def from_pyiceberg(cls, name: str, *, source: str | None = None) -> Config:
        """The catalog `name` as pyiceberg itself would load it: `.pyiceberg.yaml` and `PYICEBERG_CATALOG__NAME__*`.

        `type: rest` (or a `uri` starting with http) becomes `[catalog] type = "rest"`, a SQL URI a
        SQL catalog; every other property is passed through to pyiceberg unchanged. The storage
        root of the ADR layout is `icebergdo.location`, else `warehouse` when it is a URI.
        """
        from pyiceberg.utils.config import Config as PyicebergConfig

        props = {str(k): str(v) for k, v in (PyicebergConfig().get_catalog_config(name) or {}).items()}
        where = source or f"pyiceberg catalog {name!r}"
        if not props:
            raise ConfigError(f"{where}: not found in .pyiceberg.yaml ($PYICEBERG_HOME, ~ or .) or PYICEBERG_CATALOG__{name.upper()}__* variables")
        uri = props.pop("uri", "")
        kind = props.pop("type", "rest" if uri.startswith(("http://", "https://")) else "sql")
        cat: dict[str, Any] = {"name": name, "uri": uri}
        if kind == "rest":
            cat["type"] = "rest"
            keys = (("warehouse", "warehouse"), ("token", "token"), ("scope", "scope"), ("oauth2_server_uri", "oauth2-server-uri"), ("location", "icebergdo.location"))
            for ours, theirs in keys:
                if theirs in props:
                    cat[ours] = props.pop(theirs)
            if "credential" in props:
                cat["client_id"], _, cat["client_secret"] = props.pop("credential").partition(":")
            cat["properties"] = props
        elif kind == "sql":
            cat["warehouse"] = props.pop("warehouse", "")
        else:
            raise ConfigError(f"{where}: type {kind!r} is not supported by icebergdo (use rest or sql)")
        return cls.from_dict({"catalog": cat}, source=where)

    @classmethod
    def resolve(cls, *, home: str | None = None, config: str | None = None, catalog: str | None = None) -> Config:
        """CLI precedence: --config, --home, --catalog (pyiceberg's), $ICEBERGDO_CONFIG, $ICEBERGDO_HOME, ./lakehouse."""
        if sum(1 for given in (config, home, catalog) if given) > 1:
            raise ConfigError("give only one of --config, --home or --catalog")
        if catalog:
            return cls.from_pyiceberg(catalog)
        if config:
            return cls.from_file(config)
        if home:
            return cls.from_home(home)
        if os.environ.get(ENV_CONFIG):
            return cls.from_file(os.environ[ENV_CONFIG])
        return cls.from_home(os.environ.get(ENV_HOME) or "lakehouse")

    # -- derived ------------------------------------------------------------------------------
    @property
    def is_s3(self) -> bool:
        return self.warehouse.startswith("s3://")

    @property
    def is_sqlite(self) -> bool:
        return self.catalog_type == "sql" and self.catalog_uri.startswith("sqlite")

    @property
    def is_rest(self) -> bool:
        return self.catalog_type == "rest"

    def section(self, name: str) -> dict[str, Any]:
        value = self.sections.get(name) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self.source}: [{name}] must be a table")
        return value

    def catalog_properties(self) -> dict[str, str]:
        """pyiceberg catalog properties: `SqlCatalog`'s, or `RestCatalog`'s for `type = "rest"`."""
        props = {"uri": self.catalog_uri, "warehouse": self.warehouse}
        if self.s3:
            props.update(self.s3.fileio_properties())
        if self.rest is not None:
            props.pop("warehouse")
            props.update(self.rest.catalog_properties())
        return props

    def __repr__(self) -> str:
        return f"Config({self.redacted()})"

    def secrets(self) -> list[str]:
        """Every secret value this config holds (for `icebergdo.redact.scrub`)."""
        out = [v for v in (self.s3.secret_access_key, self.s3.session_token) if v] if self.s3 else []
        password = uri_password(self.catalog_uri)
        if password:
            out.append(password)
        if self.rest is not None:
            out += self.rest.secrets()
        return out

    def redacted(self) -> dict[str, Any]:
        """For display: never contains a secret or a database password."""
        return {
            "source": self.source,
            "catalog_name": self.catalog_name,
            "catalog_type": self.catalog_type,
            "catalog_uri": redact_uri(self.catalog_uri),
            "warehouse": self.warehouse,
            "s3": self.s3.redacted() if self.s3 else None,
            **({"rest": self.rest.redacted()} if self.rest is not None else {}),
        }


def _rest_settings(cat: dict[str, Any], source: str) -> tuple[RestCatalogSettings, str, str]:
    """([catalog] of type rest) → (settings, REST URI, storage root of the layout)."""
    uri = str(cat.get("uri") or "")
    if uri and not uri.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: [catalog] uri of a REST catalog must be http(s)://…, got {redact_uri(uri)!r}")
    extra = cat.get("properties") or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"{source}: [catalog.properties] must be a table of pyiceberg catalog properties")
    warehouse = str(cat.get("warehouse") or "") or None
    location = str(cat.get("location") or "")
    if not location and warehouse and urlparse(warehouse).scheme in ("s3", "s3a", "file"):
        location = warehouse
    if not location:
        raise ConfigError(
            f"{source}: [catalog] location is required for a REST catalog whose warehouse is a name "
            "(s3://bucket/prefix: where the tables' files live)"
        )
    token = cat.get("token") or None
    client_id, client_secret = cat.get("client_id") or None, cat.get("client_secret") or None
    if bool(client_id) != bool(client_secret):
        raise ConfigError(f"{source}: [catalog] client_id and client_secret go together (OAuth2 client credentials)")
    settings = RestCatalogSettings(
        warehouse=warehouse,
        token=str(token) if token else None,
        client_id=str(client_id) if client_id else None,
        client_secret=str(client_secret) if client_secret else None,
        scope=str(cat["scope"]) if cat.get("scope") else None,
        oauth2_server_uri=str(cat["oauth2_server_uri"]) if cat.get("oauth2_server_uri") else None,
        properties={str(k): str(v) for k, v in extra.items()},
    )
    return settings, uri, location


def _absolute_sqlite(uri: str) -> str:
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def _normalise_warehouse(warehouse: str, source: str) -> str:
    parsed = urlparse(warehouse)
    if parsed.scheme in ("s3", "s3a"):
        if not parsed.netloc:
            raise ConfigError(f"{source}: warehouse {warehouse!r} has no bucket")
        return f"s3://{parsed.netloc}{parsed.path}".rstrip("/")
    if parsed.scheme == "file":
        # file:///abs/path is absolute; file://rel/path (a "host" that isn't localhost) is relative to the cwd.
        local = parsed.path if parsed.netloc in ("", "localhost") else parsed.netloc + parsed.path
        return Path(local).resolve().as_uri()
    if parsed.scheme == "":
        return Path(warehouse).resolve().as_uri()
    raise ConfigError(f"{source}: warehouse must be file://… or s3://bucket/prefix, got scheme {parsed.scheme!r}")
