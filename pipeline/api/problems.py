"""Errors of the API as RFC 9457 problem details (``application/problem+json``).

Each kind has a stable ``type`` URI, ``urn:usage-pipeline:problem:<slug>``, that clients
may switch on; ``title`` is fixed per kind, ``detail`` says what happened this time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:usage-pipeline:problem:"

KINDS: dict[str, tuple[int, str]] = {
    "bad-request": (400, "The request is malformed"),
    "unauthorized": (401, "A valid API key is needed"),
    "forbidden": (403, "This API key may not do that"),
    "unknown-user": (404, "No such user"),
    "not-found": (404, "No such resource"),
    "method-not-allowed": (405, "Method not allowed on this resource"),
    "payload-too-large": (413, "The request is too large"),
    "unsupported-media-type": (415, "Send application/json or application/x-ndjson"),
    "unavailable": (503, "A server the API depends on cannot be reached"),
    "internal": (500, "The API failed; nothing was lost, try again"),
}
"""slug -> (status, title): every problem the API answers with."""


class Problem(Exception):
    """Raised by a handler; the problems middleware answers it."""

    def __init__(
        self,
        slug: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        if slug not in KINDS:
            raise ValueError(f"unknown problem kind {slug!r}")
        self.slug, self.detail = slug, detail
        self.headers = dict(headers or {})
        self.extensions = extensions

    @property
    def status(self) -> int:
        return KINDS[self.slug][0]

    def body(self, instance: str) -> dict[str, Any]:
        return {
            "type": TYPE_PREFIX + self.slug,
            "title": KINDS[self.slug][1],
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
            **self.extensions,
        }


def respond(problem: Problem, instance: str) -> web.Response:
    return web.Response(
        status=problem.status,
        body=json.dumps(problem.body(instance)).encode(),
        content_type=CONTENT_TYPE,
        headers=problem.headers,
    )


_HTTP_SLUGS = {400: "bad-request", 404: "not-found", 405: "method-not-allowed",
               413: "payload-too-large"}  # fmt: skip


def from_http(exc: web.HTTPException) -> Problem | None:
    """aiohttp's own refusals (no route, wrong method, body over the limit) as problems."""
    slug = _HTTP_SLUGS.get(exc.status)
    return Problem(slug, exc.reason) if slug is not None else None
