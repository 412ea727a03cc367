"""Bearer API keys for every route but the open ones (health, metrics, the OpenAPI document).

A key is looked up by its visible prefix and its token compared as a digest in constant
time. Found keys are remembered for `KEY_CACHE_SECONDS`, so a balance check costs no key
query, and a revoked key stops working within that time. Tokens are never logged.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from pipeline.api import keys
from pipeline.api.keys import ApiKey, Scope
from pipeline.api.problems import Problem

KEY_CACHE_SECONDS = 5.0
KEY = web.RequestKey("api_key", ApiKey)
INGEST_ROUTES = frozenset({"/v1/events", "/v1/ingest/litellm"})


class KeyCache:
    def __init__(self, pool: AsyncConnectionPool[Any], ttl: float = KEY_CACHE_SECONDS) -> None:
        self.pool, self.ttl = pool, ttl
        self._found: dict[str, tuple[float, ApiKey, bytes]] = {}

    async def key(self, token: str) -> ApiKey | None:
        prefix = keys.prefix_of(token)
        if prefix is None:
            return None
        now = time.monotonic()
        cached = self._found.get(prefix)
        if cached is None or cached[0] < now:
            async with self.pool.connection() as conn:
                cur = await conn.execute(keys.FIND_SQL, (prefix,))
                row = await cur.fetchone()
            if row is None:
                self._found.pop(prefix, None)
                return None
            cached = (now + self.ttl, keys.from_row(row), bytes(row[6]))
            self._found[prefix] = cached
        _, key, stored = cached
        return key if keys.matches(token, stored) else None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def required_scope(request: web.Request) -> Scope | None:
    """What the matched route needs (None: an open route)."""
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else ""
    if not path.startswith("/v1/"):
        return None
    return Scope.INGEST if path in INGEST_ROUTES else Scope.READ


def middleware(cache: KeyCache) -> Any:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        needed = required_scope(request)
        if needed is None:
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem("unauthorized", "send Authorization: Bearer <API key>",
                          {"WWW-Authenticate": "Bearer"})  # fmt: skip
        key = await cache.key(token.strip())
        if key is None:
            raise Problem("unauthorized", "the API key is unknown or revoked",
                          {"WWW-Authenticate": 'Bearer error="invalid_token"'})  # fmt: skip
        if not keys.allows(key.scope, needed):
            raise Problem("forbidden", f"key {key.name} has scope {key.scope}, this needs {needed}")
        request[KEY] = key
        return await handler(request)

    return authenticate
