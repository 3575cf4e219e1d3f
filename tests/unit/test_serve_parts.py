"""The pure parts of `icebergdo serve`: [serve] settings, bodies, idempotency memory, rate limits."""

from __future__ import annotations

import asyncio
import gzip
import time

import pytest

from icebergdo.errors import ConfigError
from icebergdo.serve import bodies
from icebergdo.serve.http import HttpError
from icebergdo.serve.limits import IdempotencyCache, Outcome, RateLimiter
from icebergdo.serve.settings import Settings, hash_token


def test_settings_defaults_and_full_section() -> None:
    s = Settings.from_section({}, embedded=True)
    assert (s.host, s.port, s.auth, s.max_body, s.maintenance) == ("127.0.0.1", 8181, True, 4 * 1024 * 1024, True)
    assert Settings.from_section({}, embedded=False).maintenance is False
    s = Settings.from_section({
        "host": "0.0.0.0", "port": 9000, "max_body": "512KiB", "max_age": "500ms", "block_timeout": 0,
        "tokens": [{"name": "shop", "sha256": hash_token("t-shop"), "sources": ["shop"], "namespaces": "*"},
                   {"name": "cat", "sha256": hash_token("t-cat"), "scopes": ["catalog"]}],
        "webhooks": {"stripe": {"provider": "stripe", "secret": "whsec_x"}, "svc": {"provider": "svix", "secret": ["a", "b"], "tolerance": "10m"}},
        "rate_limits": {"stripe": 50, "*": 1000},
        "maintenance": {"enabled": False, "every": "15m"},
        "catalog": {"enabled": True, "prefix": "x"},
    })
    assert s.max_body == 512 * 1024 and s.max_age == 0.5 and s.maintenance_every == 900 and not s.maintenance
    assert s.token_for("t-shop", "ingest").name == "shop"
    assert s.token_for("t-shop", "catalog") is None  # scopes are separate
    assert s.token_for("t-cat", "catalog").name == "cat" and s.token_for("t-cat", "ingest") is None
    assert s.token_for("wrong", "ingest") is None
    shop = s.token_for("t-shop", "ingest")
    assert shop.only_source == "shop" and shop.namespaces is None
    assert s.webhooks["svc"].provider == "standard" and s.webhooks["svc"].secrets == ("a", "b") and s.webhooks["svc"].tolerance == 600
    assert s.rate_for("stripe") == 50 and s.rate_for("other") == 1000 and s.catalog and s.catalog_options == {"prefix": "x"}
    assert "whsec_x" not in repr(s) and hash_token("t-shop") not in repr(s)
    assert set(s.secrets()) == {"whsec_x", "a", "b"}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"prot": 1}, "unknown key(s) prot"),
        ({"port": "80"}, "port: expected an integer"),
        ({"max_body": "lots"}, "max_body: expected a size"),
        ({"tokens": [{"name": "a", "sha256": "plain-token"}]}, "64-hex-digit SHA-256"),
        ({"tokens": [{"name": "a", "sha256": "0" * 64, "scopes": ["admin"]}]}, "unknown admin"),
        ({"webhooks": {"x": {"provider": "paypal", "secret": "s"}}}, "provider: expected one of"),
        ({"webhooks": {"x": {"provider": "github"}}}, "secret: required"),
        ({"rate_limits": {"x": 0}}, "rate_limits.x"),
    ],
)
def test_settings_errors_name_the_key(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="serve") as err:
        Settings.from_section(section, source="f.toml")
    assert message in str(err.value) and "f.toml" in str(err.value)


def test_bodies_json_ndjson_gzip_and_limits() -> None:
    rows, labels = bodies.records(b'{"a": 1}', "application/json; charset=utf-8")
    assert rows == [{"a": 1}] and labels == ["events[0]"]
    rows, labels = bodies.records(b'[{"a": 1}, {"a": 2}]', None)
    assert len(rows) == 2 and labels[1] == "events[1]"
    rows, labels = bodies.records(b'{"a": 1}\n\n{"a": 2}\n', "application/x-ndjson")
    assert labels == ["events[0] (line 1)", "events[1] (line 3)"]
    with pytest.raises(HttpError) as err:
        bodies.records(b'{"a": 1}\n{"a": \n', "application/x-ndjson")
    assert err.value.status == 400 and "events[1] (line 2)" in err.value.message
    with pytest.raises(HttpError) as err:
        bodies.records(b"a=1", "application/x-www-form-urlencoded")
    assert err.value.status == 415
    data = b'{"a": 1}\n' * 100
    assert bodies.decode(gzip.compress(data), "gzip", 10_000) == data
    bomb = gzip.compress(b" " * 1_000_000)
    assert len(bomb) < 2_000
    with pytest.raises(HttpError) as err:
        bodies.decode(bomb, "gzip", 10_000)
    assert err.value.status == 413
    with pytest.raises(HttpError) as err:
        bodies.decode(b"not gzip", "gzip", 10_000)
    assert err.value.status == 400
    with pytest.raises(HttpError) as err:
        bodies.decode(data, "br", 10_000)
    assert err.value.status == 415
    e = bodies.invalid("events[3] (line 4): field 'ts': cannot parse time 'x'")
    assert (e.status, e.index, e.field) == (422, 3, "ts")

    async def chunks():
        for _ in range(10):
            yield b"x" * 1000

    async def read(limit: int, length: str | None) -> bytes:
        return await bodies.read_body(chunks(), length, limit)

    assert len(asyncio.run(read(10_000, None))) == 10_000
    for length in (None, "10000"):
        with pytest.raises(HttpError) as err:
            asyncio.run(read(9_999, length))
        assert err.value.status == 413


def test_idempotency_runs_once_and_replays() -> None:
    cache = IdempotencyCache(window=60, max_keys=2)
    calls: list[int] = []

    async def work() -> Outcome:
        calls.append(1)
        await asyncio.sleep(0.05)
        return Outcome(202, {"accepted": len(calls)})

    async def main() -> list[tuple[Outcome, bool]]:
        # two concurrent requests with one key: the second waits for the first and replays it
        return list(await asyncio.gather(cache.run("k1", work), cache.run("k1", work), cache.run(None, work)))

    results = asyncio.run(main())
    assert len(calls) == 2  # k1 once, the unkeyed one once
    assert results[0] == (Outcome(202, {"accepted": 1}), False) or results[0][1] is False
    assert results[1][1] is True and results[1][0] == results[0][0]

    async def failing() -> Outcome:
        raise HttpError(429, "backpressure", "full")

    async def retry() -> tuple[Outcome, bool]:
        with pytest.raises(HttpError):
            await cache.run("k2", failing)
        return await cache.run("k2", work)  # a refused request may be retried with its key

    assert asyncio.run(retry())[1] is False
    asyncio.run(cache.run("k3", work))
    assert len(cache) == 2  # bounded: the oldest key was forgotten
    expired = IdempotencyCache(window=0.01, max_keys=10)
    asyncio.run(expired.run("k", work))
    time.sleep(0.02)
    assert asyncio.run(expired.run("k", work))[1] is False


def test_rate_limiter_refuses_with_retry_after_and_refills() -> None:
    limiter = RateLimiter(lambda source: 100.0 if source == "slow" else None)
    limiter.take("fast", 10_000)  # unlimited
    limiter.take("slow", 60)
    with pytest.raises(HttpError) as err:
        limiter.take("slow", 60)
    assert err.value.status == 429 and 0.1 < err.value.retry_after <= 0.25
    time.sleep(0.25)
    limiter.take("slow", 60)
    time.sleep(1.05)
    limiter.take("slow", 500)  # bigger than a second's worth: allowed on a full bucket, leaves a debt
    with pytest.raises(HttpError):
        limiter.take("slow", 1)


def test_new_token_prints_a_config_entry_that_authenticates(capsys: pytest.CaptureFixture[str]) -> None:
    import tomllib

    from icebergdo.cli import main

    assert main(["serve", "--new-token", "shop-backend", "--sources", "shop, billing", "--namespaces", "shop"]) == 0
    out = capsys.readouterr().out
    token = out.split("keep it out of files): ", 1)[1].split("\n", 1)[0].strip()
    entry = tomllib.loads(out.split("only the hash is stored):\n", 1)[1])
    assert token not in out.split("only the hash is stored):", 1)[1]  # the entry holds the hash only
    settings = Settings.from_section(entry["serve"])
    found = settings.token_for(token, "ingest")
    assert found is not None and found.name == "shop-backend"
    assert found.sources == {"shop", "billing"} and found.namespaces == {"shop"}
    assert settings.token_for(token + "x", "ingest") is None


def test_no_auth_is_refused_off_loopback(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from icebergdo.cli import main

    assert main(["--home", str(tmp_path / "lh"), "serve", "--no-auth", "--host", "0.0.0.0"]) == 2
    assert "only on a loopback address" in capsys.readouterr().err
    assert not (tmp_path / "lh").exists()  # refused before anything was opened


def test_catalog_mount_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """`[serve.catalog] enabled` mounts `icebergdo.restcatalog.rest_catalog_app(lh, settings)` at /catalog; off: nothing."""
    import sys
    import types

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from icebergdo.serve.app import mount_catalog

    seen = []

    def rest_catalog_app(lh: object, settings: Settings) -> Starlette:
        seen.append((lh, settings))
        return Starlette(routes=[Route("/v1/config", lambda request: PlainTextResponse("catalog"))])

    monkeypatch.setitem(sys.modules, "icebergdo.restcatalog", types.SimpleNamespace(rest_catalog_app=rest_catalog_app))
    off, on = Settings.from_section({}), Settings.from_section({"catalog": {"enabled": True}})
    app = Starlette()
    mount_catalog(app, "lh", off)
    assert not app.routes and not seen
    mount_catalog(app, "lh", on)
    assert seen == [("lh", on)]
    assert [r.path for r in app.routes if isinstance(r, Mount)] == ["/catalog"]


def test_group_validation_refuses_only_the_bad_request() -> None:
    """Requests validated as one group: a bad record fails only its own request, naming it; the rest is written."""
    from icebergdo.serve.ingest import Pending, validate_group

    loop = asyncio.new_event_loop()
    try:
        def item(rows: list, label: str = "events") -> Pending:
            return Pending(loop.create_future(), rows=rows, labels=[f"{label}[{i}]" for i in range(len(rows))])

        good = [item([{"ts": 1000 * i, "type": "a", "id": f"g{i}"}]) for i in range(3)]
        bad = item([{"ts": 1, "type": "a"}, {"ts": "soon", "type": "a"}])
        group = validate_group([good[0], bad, good[1], good[2]])
        assert group is not None and group.column("id").to_pylist() == ["g0", "g1", "g2"]
        assert group.column("id").num_chunks == 1  # one record batch for the WAL
        assert bad.table is None and bad.error is not None
        assert (bad.error.status, bad.error.index, bad.error.field) == (422, 1, "ts")
        assert [it.table.column("id").to_pylist() for it in good] == [["g0"], ["g1"], ["g2"]]
        fine = [item([{"ts": 1, "type": "a", "id": "x"}]), item([{"ts": 2, "type": "b", "id": "y"}, {"ts": 3, "type": "c", "id": "z"}])]
        group = validate_group(fine)  # the common case: one validation for the whole group
        assert group.num_rows == 3 and fine[1].table.column("id").to_pylist() == ["y", "z"]
        assert validate_group([bad]) is None
    finally:
        loop.close()
