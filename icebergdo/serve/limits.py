"""Per-request bookkeeping that must not grow without bound: idempotency keys and per-source rate limits.

Idempotency: a client may send `Idempotency-Key`; the first request with a key (per token, per
route) runs, and for `window` seconds every repeat gets the first one's status and body back and
writes nothing. A repeat that arrives while the first is still running waits for its outcome.
Only successful outcomes are remembered: a request refused with 4xx/5xx may be retried with the
same key. The memory is per process and bounded (`max_keys`, oldest forgotten first); see
docs/serve.md for what that means across restarts and several processes.

Rate limits: a token bucket per source, refilled at `rate` events per second and holding at most
one second's worth; a request that does not fit is refused whole (429) with the time until it would.
A request larger than one second's worth is let through on a full bucket and leaves a debt.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from icebergdo.serve.http import HttpError


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]


class IdempotencyCache:
    def __init__(self, window: float, max_keys: int) -> None:
        self.window = window
        self.max_keys = max_keys
        self._done: OrderedDict[str, tuple[float, Outcome]] = OrderedDict()
        self._running: dict[str, asyncio.Future[Outcome]] = {}
        self.replays = 0

    def _lookup(self, key: str) -> Outcome | None:
        hit = self._done.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit[0] > self.window:
            del self._done[key]
            return None
        return hit[1]

    async def run(self, key: str | None, work: Callable[[], Awaitable[Outcome]]) -> tuple[Outcome, bool]:
        """(outcome, replayed): run `work` once per key within the window."""
        if key is None:
            return await work(), False
        while True:
            hit = self._lookup(key)
            if hit is not None:
                self.replays += 1
                return hit, True
            running = self._running.get(key)
            if running is None:
                break
            try:
                await asyncio.shield(running)
            except Exception:  # noqa: BLE001 - the first attempt failed: this one runs instead
                pass
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._running[key] = fut
        try:
            outcome = await work()
        except BaseException as e:
            fut.set_exception(e if isinstance(e, Exception) else HttpError(503, "cancelled", "request cancelled"))
            fut.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            del self._running[key]
        if outcome.status < 300:
            self._done[key] = (time.monotonic(), outcome)
            while len(self._done) > self.max_keys:
                self._done.popitem(last=False)
        fut.set_result(outcome)
        return outcome, False

    def __len__(self) -> int:
        return len(self._done)


class RateLimiter:
    """Token buckets per source: `take(source, n)` or 429 with the seconds until `n` would fit."""

    def __init__(self, rate_for: Callable[[str | None], float | None]) -> None:
        self.rate_for = rate_for
        self._buckets: dict[str | None, tuple[float, float]] = {}  # source -> (tokens, last refill)

    def take(self, source: str | None, n: int) -> None:
        rate = self.rate_for(source)
        if rate is None or n == 0:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(source, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        need = min(n, rate)  # a request bigger than one second's worth needs a full bucket, then leaves a debt
        if tokens < need:
            self._buckets[source] = (tokens, now)
            raise HttpError(429, "rate_limited",
                            f"source {source!r} is limited to {rate:g} events/s; {n} event(s) not accepted",
                            retry_after=(need - tokens) / rate)
        self._buckets[source] = (tokens - n, now)
