"""The ASGI application (Starlette): routes, auth, and the order in which a request is checked.

`create_app(lh, settings)` is the contract with the Iceberg REST catalog (`icebergdo.restcatalog`,
mounted at `/catalog` by `mount_catalog` when `[serve.catalog] enabled = true`). Catalog tokens
and ingest tokens are separate scopes: a token needs `scopes = ["ingest"]` here.

Every ingest request goes through the same steps, cheapest refusal first, and writes nothing
unless all of them pass:

    auth (401) → ready? (503) → body within the limit (413), decoded and parsed (400/415)
    → idempotency key seen? (the first answer again) → token's sources/namespaces (403)
    → source rate limit (429) → validated, with the other requests of its group (422, naming the
    record) and durable in the WAL (429/503 when the writer is full or down) → 202

A 202 means the events are in the fsynced write-ahead log (`icebergdo.serve.ingest`); they are
committed to Iceberg at the writer's next flush (`max_age`, `max_rows`, `max_bytes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from icebergdo.lakehouse import Lakehouse
from icebergdo.serve import bodies, records
from icebergdo.serve.health import Readiness
from icebergdo.serve.http import HttpError, retry_after_header
from icebergdo.serve.ingest import Ingestor
from icebergdo.serve.limits import IdempotencyCache, Outcome, RateLimiter
from icebergdo.serve.maintainer import Maintainer
from icebergdo.serve.metrics import CONTENT_TYPE, Metrics
from icebergdo.serve.openapi import document
from icebergdo.serve.settings import Settings, Token
from icebergdo.serve.signatures import SignatureError, verify

log = logging.getLogger(__name__)

INLINE_BYTES = 64 * 1024  # bodies up to this size are parsed on the event loop; larger ones in a thread
WS_QUEUE_FRAMES = 256  # frames read ahead of the writer per WebSocket; past that the socket is not read (TCP backpressure)
MAX_IDEMPOTENCY_KEY = 255
_WWW_AUTH = {"WWW-Authenticate": 'Bearer realm="icebergdo"'}


class Service:
    """What the routes share: the writer (through `Ingestor`), readiness, limits, metrics, maintenance."""

    def __init__(self, lh: Lakehouse, settings: Settings) -> None:
        self.lh = lh
        self.settings = settings
        self.wal_dir = settings.wal_folder(lh.config)
        self.metrics = Metrics()
        self.ingestor = Ingestor(lh, settings, self.wal_dir)
        self.readiness = Readiness(
            lh.config, settings.probe_interval, settings.probe_timeout, self.ingestor.stats,
            lambda: self.ingestor.writer.max_pending_rows if self.ingestor.writer is not None else None, settings.secrets(),
        )
        self.idempotency = IdempotencyCache(settings.idempotency_window, settings.idempotency_keys)
        self.limiter = RateLimiter(settings.rate_for)
        self.shapes = records.CollectionShapes(lh)
        self.maintainer = Maintainer(lh.config, settings.maintenance_every) if settings.maintenance else None
        self.startup_error: BaseException | None = None
        self.close_error: BaseException | None = None
        self.metrics.watch_writer(self.ingestor.stats, self.wal_dir, self.readiness.status, lambda: self.ingestor.groups)
        lh.on_commit(self.metrics.on_commit)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.ingestor.start()  # opens the WAL: what a previous run left is committed first
        await asyncio.to_thread(self.readiness.probe)
        self.readiness.start()
        if self.maintainer is not None:
            self.maintainer.start()
        if self.settings.auth and not any("ingest" in t.scopes for t in self.settings.tokens):
            log.warning("serve: auth is on and no [[serve.tokens]] has the ingest scope: only signed webhooks will be accepted")

    async def stop(self) -> None:
        self.readiness.stop()
        self.close_error = await self.ingestor.close()
        if self.maintainer is not None:
            await asyncio.to_thread(self.maintainer.stop, self.settings.shutdown_timeout)

    # -- checks every ingest route makes ---------------------------------------------------------
    def authenticate(self, headers: Mapping[str, str]) -> Token | None:
        if not self.settings.auth:
            return None
        value = headers.get("authorization")
        if not value or value[:7].lower() != "bearer ":
            raise HttpError(401, "unauthorized", "a bearer token is required (Authorization: Bearer <token>)", headers=_WWW_AUTH)
        token = self.settings.token_for(value[7:].strip(), "ingest")
        if token is None:
            raise HttpError(401, "unauthorized", "unknown token, or a token without the ingest scope", headers=_WWW_AUTH)
        return token

    def require_ready(self) -> None:
        status = self.readiness.status()
        if not status.ready:
            raise HttpError(503, "unavailable", "not ready: " + "; ".join(status.reasons), retry_after=self.settings.probe_interval)

    async def body(self, request: Request, *, decode: bool = True) -> bytes:
        raw = await bodies.read_body(request.stream(), request.headers.get("content-length"), self.settings.max_body)
        return bodies.decode(raw, request.headers.get("content-encoding"), self.settings.max_body) if decode else raw

    def rate_limit(self, counts: Mapping[str | None, int]) -> None:
        """429 when a source is over its events/s (counts: events per source)."""
        if self.settings.rate_limits:
            for source, n in counts.items():
                self.limiter.take(source, n)

    async def parse(self, body: bytes, fn: Callable[[], Any]) -> Any:
        """Parsing: inline for small bodies (cheaper than a thread hop), in a thread for large ones."""
        if len(body) <= INLINE_BYTES:
            return fn()
        return await asyncio.to_thread(fn)

    async def accept_rows(self, route: str, rows: list[Any], labels: Sequence[str], token: Token | None) -> Outcome:
        """Token checks, rate limit, then validation and durability in the next group; the 202 body."""
        rows = records.precheck(rows, labels, token)
        self.rate_limit(records.sources(rows))
        table = await self.ingestor.submit_rows(rows, labels) if rows else None
        return self._accepted(route, table)

    async def accept(self, route: str, table: pa.Table) -> Outcome:
        """An already validated table (webhooks, CDC): rate limit, make durable; the 202 body."""
        if table.num_rows:
            counts = {entry["values"]: entry["counts"] for entry in pc.value_counts(table.column("source")).to_pylist()}
            self.rate_limit(counts)
            await self.ingestor.submit(table)
        return self._accepted(route, table)

    def _accepted(self, route: str, table: pa.Table | None) -> Outcome:
        ids = table.column("id").to_pylist() if table is not None else []
        self.metrics.accepted.labels(route).inc(len(ids))
        return Outcome(202, {"accepted": len(ids), "ids": ids})

    async def answer(self, key: str | None, work: Callable[[], Awaitable[Outcome]]) -> Response:
        outcome, replayed = await self.idempotency.run(key, work)
        if replayed:
            self.metrics.idempotent_replays.inc()
        return JSONResponse(outcome.body, status_code=outcome.status, headers={"Idempotent-Replayed": "true"} if replayed else None)


def _idempotency_key(request: Request, token: Token | None, route: str) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY:
        raise HttpError(400, "bad_idempotency_key", f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    return f"{token.name if token else ''}\x00{route}\x00{key}"


Handler = Callable[[Service, Request], Awaitable[Response]]


def _route(name: str, fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: `HttpError` → its JSON response; count every answer; time every acknowledgement."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        svc: Service = request.app.state.service
        try:
            response = await fn(svc, request)
        except HttpError as e:
            svc.metrics.rejected.labels(e.code).inc()
            response = e.response()
        svc.metrics.requests.labels(name, str(response.status_code)).inc()
        if response.status_code == 202:
            svc.metrics.ack_seconds.labels(name).observe(time.perf_counter() - started)
        return response

    return endpoint


# -- ingest routes --------------------------------------------------------------------------------
async def post_events(svc: Service, request: Request) -> Response:
    token = svc.authenticate(request.headers)
    svc.require_ready()
    key = _idempotency_key(request, token, "events")
    body = await svc.body(request)
    ctype = request.headers.get("content-type")

    async def work() -> Outcome:
        rows, labels = await svc.parse(body, lambda: bodies.records(body, ctype))
        return await svc.accept_rows("events", rows, labels, token)

    return await svc.answer(key, work)


async def post_rpc(svc: Service, request: Request) -> Response:
    token = svc.authenticate(request.headers)
    svc.require_ready()
    key = _idempotency_key(request, token, "rpc")
    body = await svc.body(request)
    ctype = request.headers.get("content-type")

    async def work() -> Outcome:
        def parse() -> tuple[list[Any], list[str]]:
            rows, labels = bodies.records(body, ctype, what="calls")
            return records.rpc(rows, labels), labels

        rows, labels = await svc.parse(body, parse)
        return await svc.accept_rows("rpc", rows, labels, token)

    return await svc.answer(key, work)


async def post_cdc(svc: Service, request: Request) -> Response:
    token = svc.authenticate(request.headers)
    svc.require_ready()
    namespace, collection = request.path_params["namespace"], request.path_params["collection"]
    key = _idempotency_key(request, token, f"cdc/{namespace}/{collection}")
    body = await svc.body(request)
    ctype = request.headers.get("content-type")

    async def work() -> Outcome:
        def validate() -> pa.Table:  # reads the collection's key and types from the catalog (cached): a thread
            rows, labels = bodies.records(body, ctype, what="changes")
            return records.cdc(namespace, collection, rows, labels, token, svc.shapes)

        return await svc.accept("cdc", await asyncio.to_thread(validate))

    return await svc.answer(key, work)


async def post_webhook(svc: Service, request: Request) -> Response:
    name = request.path_params["source"]
    source = svc.settings.webhooks.get(name)
    if source is None:
        raise HttpError(404, "unknown_source", f"no webhook source {name!r} is configured ([serve.webhooks.{name}])")
    svc.require_ready()
    body = await svc.body(request, decode=False)  # the signature covers the bytes as sent
    try:
        verified = verify(source, request.headers, body, time.time())
    except SignatureError as e:
        svc.metrics.signature_failures.labels(name, e.reason).inc()
        raise HttpError(401, "bad_signature", f"webhook {name}: {e}") from None
    key = f"webhook\x00{name}\x00{verified.event_id}" if verified.event_id else None  # provider retries are stored once

    async def work() -> Outcome:
        return await svc.accept("webhook", records.webhook(name, body, verified.event_id, verified.ts))

    return await svc.answer(key, work)


# -- WebSocket ------------------------------------------------------------------------------------
def _frame(text: str, expected: int) -> tuple[int, list[Any], list[str]]:
    """(seq, records, labels) of one frame: `{"seq", "events"}`, or events as JSON/array/NDJSON (seq = previous + 1)."""
    stripped = text.strip()
    try:
        doc = json.loads(stripped) if stripped else []
    except ValueError:
        rows, labels = bodies.records(text.encode(), "application/x-ndjson")
        return expected, rows, labels
    if isinstance(doc, dict) and "events" in doc:
        seq = doc.get("seq", expected)
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < expected:
            raise HttpError(400, "bad_seq", f"frame seq must be an integer >= {expected}, got {seq!r}")
        rows = doc["events"] if isinstance(doc["events"], list) else [doc["events"]]
        return seq, rows, [f"events[{i}]" for i in range(len(rows))]
    rows = doc if isinstance(doc, list) else [doc]
    return expected, rows, [f"events[{i}]" for i in range(len(rows))]


async def ws_events(websocket: WebSocket) -> None:
    """Frames in, acks out: an ack `seq` N means every frame up to N is durable or was refused in an error frame."""
    svc: Service = websocket.app.state.service
    try:
        token = svc.authenticate(websocket.headers)
    except HttpError:
        svc.metrics.rejected.labels("unauthorized").inc()
        await websocket.close(code=1008)  # before accept: the handshake is refused with 403
        return
    await websocket.accept()
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=WS_QUEUE_FRAMES)

    async def read() -> None:
        try:
            while True:
                msg = await websocket.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                text = msg.get("text")
                await queue.put(text if text is not None else (msg.get("bytes") or b"").decode("utf-8", errors="replace"))
        finally:
            await queue.put(None)

    reader = asyncio.create_task(read())
    seq = 0
    total = 0
    try:
        while True:
            frames = [await queue.get()]
            while not queue.empty() and len(frames) < WS_QUEUE_FRAMES:
                frames.append(queue.get_nowait())
            ended = None in frames
            batch: list[tuple[int, list[Any], list[str]]] = []
            errors: dict[int, dict[str, Any]] = {}
            for text in frames:
                if text is None:
                    continue
                frame_seq = seq + 1
                try:
                    frame_seq, rows, labels = _frame(text, frame_seq)
                    rows = records.precheck(rows, labels, token)
                    if rows:
                        batch.append((frame_seq, rows, labels))
                except HttpError as e:
                    errors[frame_seq] = e.body()
                seq = frame_seq
            if batch:
                done = await _durable(svc, websocket, batch, errors)
                if done is None:
                    return
                total += done
            for s, body in sorted(errors.items()):
                svc.metrics.rejected.labels(body["error"]["code"]).inc()
                await websocket.send_json({"type": "error", "seq": s, **body})
            if batch or errors:
                await websocket.send_json({"type": "ack", "seq": seq, "accepted": total})
            if ended:
                return
    except WebSocketDisconnect:
        return
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader


async def _durable(svc: Service, websocket: WebSocket, batch: list[tuple[int, list[Any], list[str]]],
                   errors: dict[int, dict[str, Any]]) -> int | None:
    """Make the frames durable (one group); a frame that does not validate goes to `errors`. While the writer is
    full or the service not ready the client gets a pause frame and the frames are retried (the socket is not
    read meanwhile). Returns the events accepted, or None when the service is shutting down."""
    paused = False
    accepted = 0
    while batch:
        try:
            svc.require_ready()
            counts: dict[str | None, int] = {}
            for _, rows, _labels in batch:
                for source, n in records.sources(rows).items():
                    counts[source] = counts.get(source, 0) + n
            svc.rate_limit(counts)
        except HttpError as e:
            results: list[Any] = [e] * len(batch)
        else:
            results = list(await asyncio.gather(*(svc.ingestor.submit_rows(rows, labels) for _, rows, labels in batch),
                                                return_exceptions=True))
        retry: list[tuple[int, list[Any], list[str]]] = []
        wait = 0.0
        for frame, result in zip(batch, results, strict=True):
            if isinstance(result, pa.Table):
                accepted += result.num_rows
            elif isinstance(result, HttpError) and result.code == "shutting_down":
                await websocket.close(code=1012)  # service restart: reconnect and resend what was not acked
                return None
            elif isinstance(result, HttpError) and result.status in (429, 503):
                retry.append(frame)
                wait = max(wait, result.retry_after or 1.0)
            elif isinstance(result, HttpError):
                errors[frame[0]] = result.body()
            else:
                raise result
        batch = retry
        if batch:
            if not paused:
                await websocket.send_json({"type": "pause", "retry_after": retry_after_header(wait)})
                paused = True
            await asyncio.sleep(wait)
    svc.metrics.accepted.labels("ws").inc(accepted)
    if paused:
        await websocket.send_json({"type": "resume"})
    return accepted


# -- operations -----------------------------------------------------------------------------------
async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    svc: Service = request.app.state.service
    status = svc.readiness.status()
    body = {"ready": status.ready, "checks": status.checks}
    if status.ready:
        return JSONResponse(body)
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(retry_after_header(svc.settings.probe_interval))})


async def metrics(request: Request) -> Response:
    svc: Service = request.app.state.service
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    svc: Service = request.app.state.service
    return JSONResponse(document(svc.settings))


def mount_catalog(app: Starlette, lh: Lakehouse, settings: Settings) -> None:
    """The Iceberg REST catalog (`icebergdo.restcatalog`) at `/catalog`, when `[serve.catalog]` enables it.

    Imported only then: a plain ingest service does not pay for it.
    """
    if not settings.catalog:
        return
    rest = importlib.import_module("icebergdo.restcatalog")
    app.mount("/catalog", rest.rest_catalog_app(lh, settings))


def create_app(lh: Lakehouse, settings: Settings | None = None) -> Starlette:
    """The service as an ASGI app. The writer is opened at startup (lifespan) and closed — flushed and
    committed — at shutdown."""
    settings = settings or Settings.from_config(lh.config)
    service = Service(lh, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await service.start()
        except BaseException as e:
            service.startup_error = e
            raise
        try:
            yield
        finally:
            await service.stop()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/v1/events", _route("events", post_events), methods=["POST"]),
            Route("/v1/rpc", _route("rpc", post_rpc), methods=["POST"]),
            Route("/v1/cdc/{namespace}/{collection}", _route("cdc", post_cdc), methods=["POST"]),
            Route("/v1/webhooks/{source}", _route("webhook", post_webhook), methods=["POST"]),
            WebSocketRoute("/v1/ws", ws_events),
        ],
        lifespan=lifespan,
    )
    app.state.service = service
    mount_catalog(app, lh, settings)
    return app
