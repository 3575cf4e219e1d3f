"""A realistic day of mixed events, for `icebergdo demo` and benchmarks.

Traffic follows a daily curve (quiet at night, busy in the afternoon) and mixes the event kinds the
platform sees: webhooks, RPC calls, WebSocket messages, custom events and CDC changes.
"""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from ulid import ULID

from icebergdo.schema import EVENT_ARROW_SCHEMA

_KINDS = [
    ("webhook", ["stripe", "github", "shopify"], 0.35),
    ("rpc", ["api", "billing", "auth"], 0.30),
    ("ws", ["chat", "presence"], 0.15),
    ("custom", ["app", "marketing"], 0.12),
    ("cdc", ["postgres"], 0.08),
]


def _hour_weight(hour: int) -> float:
    return 0.25 + math.sin(math.pi * max(0, hour - 5) / 19) ** 2 if hour >= 5 else 0.25


def generate_day(day: datetime, events: int, seed: int = 7) -> pa.Table:
    """`events` events spread over the UTC day starting at `day`, as an Arrow table in the event schema."""
    rng = random.Random(seed)
    start = day.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    weights = [_hour_weight(h) for h in range(24)]
    kinds = [k for k in _KINDS]
    cols: dict[str, list] = {name: [] for name in EVENT_ARROW_SCHEMA.names}
    hours = rng.choices(range(24), weights=weights, k=events)
    now = datetime.now(UTC)
    for hour in hours:
        ts = start + timedelta(hours=hour, seconds=rng.uniform(0, 3600))
        kind, sources, _ = rng.choices(kinds, weights=[k[2] for k in kinds])[0]
        source = rng.choice(sources)
        namespace = collection = None
        if kind == "webhook":
            payload = {"event": rng.choice(["invoice.paid", "push", "order.created"]), "amount": rng.randint(1, 50_000)}
        elif kind == "rpc":
            payload = {"method": rng.choice(["getUser", "charge", "login"]), "ms": round(rng.expovariate(1 / 40), 2)}
        elif kind == "ws":
            payload = {"channel": f"room-{rng.randint(1, 50)}", "bytes": rng.randint(10, 4000)}
        elif kind == "custom":
            payload = {"name": rng.choice(["signup", "click", "share"]), "user": f"u{rng.randint(1, 5000)}"}
        else:
            op = rng.choice(["insert", "update", "update", "delete"])
            kind = f"collection.{op}"
            namespace, collection = "shop", "orders"
            payload = {"id": f"o{rng.randint(1, 2000)}", "status": rng.choice(["new", "paid", "shipped"])}
        cols["id"].append(str(ULID.from_datetime(ts)))
        cols["ts"].append(ts)
        cols["type"].append(kind)
        cols["source"].append(source)
        cols["namespace"].append(namespace)
        cols["collection"].append(collection)
        cols["payload"].append(json.dumps(payload, separators=(",", ":")))
        cols["ingested_at"].append(now)
    return pa.Table.from_pydict(cols, schema=EVENT_ARROW_SCHEMA)
