"""The OpenAPI 3.1 document of the gateway API, served at /openapi.json and committed as
`schemas/openapi.json` (a test keeps the two, and the routes, in step).

The event schema is contract v1's own (`pipeline.core.events.json_schema`), with its
``$defs`` moved under ``components.schemas``.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline import REPOSITORY
from pipeline.api import problems
from pipeline.core.events import json_schema
from pipeline.errors import Reason

COMMITTED = REPOSITORY / "schemas" / "openapi.json"


def _event_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    text = json.dumps(json_schema()).replace("#/$defs/", "#/components/schemas/")
    schema = json.loads(text)
    schema.pop("$id", None)
    return schema, schema.pop("$defs", {})


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {problems.CONTENT_TYPE: {
        "schema": {"$ref": "#/components/schemas/Problem"}}}}  # fmt: skip


_AUTH_ERRORS = {
    "401": _problem("No API key, or an unknown or revoked one"),
    "403": _problem("The key's scope or users do not cover this"),
}
_USER_ERRORS = {
    "400": _problem("Malformed user id or query"),
    **_AUTH_ERRORS,
    "404": _problem("No such user"),
    "503": _problem("PostgreSQL cannot be reached"),
}
_USER = {"name": "user_id", "in": "path", "required": True,
         "schema": {"type": "string", "format": "uuid"}}  # fmt: skip


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def document() -> dict[str, Any]:
    event, definitions = _event_schema()
    result = {
        "type": "object",
        "required": ["index", "status"],
        "properties": {
            "index": {"type": "integer", "description": "Position in the request."},
            "status": {"enum": ["accepted", "rejected", "not_published"]},
            "request_id": {"type": "string", "format": "uuid"},
            "reason": {"enum": [r.value for r in Reason],
                       "description": "Why rejected: the dead-letter reason codes."},
            "detail": {"type": "string"},
        },
    }  # fmt: skip
    date = {"type": "string", "format": "date"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "usage-pipeline gateway API",
            "version": "1.0.0",
            "description": "HTTP ingest of usage events and the pre-request balance check.",
        },
        "servers": [{"url": "http://127.0.0.1:8080"}],
        "security": [{"bearer": []}],
        "paths": {
            "/v1/events": {"post": {
                "summary": "Publish usage events (scope ingest)",
                "description": "One event, a JSON array, or NDJSON. The answer comes once the "
                "broker acknowledged every accepted event; rejected events are not published.",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"oneOf": [
                        _ref("UsageEvent"), {"type": "array", "items": _ref("UsageEvent")}]}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                }},
                "responses": {
                    "202": _json(_ref("IngestResult"), "Every accepted event is published"),
                    "400": _problem("The body is not JSON or holds no event"),
                    **_AUTH_ERRORS,
                    "413": _problem("Too many events or too large a body"),
                    "415": _problem("Another Content-Type"),
                    "503": _problem("Kafka did not acknowledge: `results` says which events "
                                    "were published; send the others again"),
                },
            }},
            "/v1/ingest/litellm": {"post": {
                "summary": "LiteLLM's generic_api logger (scope ingest, a key for every user)",
                "description": "A batch of LiteLLM StandardLoggingPayload objects (log_format "
                "json_array, or ndjson, sent as application/json too), each mapped to an event "
                "of the LiteLLM user LITELLM_USER_SOURCE names; the worker books it for the user "
                "linked to that id (`usage-pipeline gateway-users link`) or dead-letters it as "
                "unknown_user. Answered like /v1/events.",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"oneOf": [
                        {"type": "array", "items": {"type": "object"}}, {"type": "object"},
                        {"type": "string", "description": "NDJSON"}]}},
                }},
                "responses": {
                    "202": _json(_ref("IngestResult"), "Every mapped event is published"),
                    "400": _problem("The body holds no payload"),
                    **_AUTH_ERRORS,
                    "413": _problem("Too many payloads or too large a body"),
                    "503": _problem("Kafka did not acknowledge: `results` says which events "
                                    "were published; send the others again"),
                },
            }},
            "/v1/users/{user_id}/balance": {"get": {
                "summary": "The exact balance (scope read)",
                "parameters": [_USER],
                "responses": {"200": _json(_ref("Balance"), "The balance"), **_USER_ERRORS},
            }},
            "/v1/users/{user_id}/entitlement": {"get": {
                "summary": "May the user start a request costing N credits (scope read)",
                "parameters": [_USER, {"name": "credits", "in": "query", "required": True,
                                       "schema": {"type": "integer", "minimum": 0}}],
                "responses": {"200": _json(_ref("Entitlement"), "The answer"), **_USER_ERRORS},
            }},
            "/v1/users/{user_id}/usage": {"get": {
                "summary": "Daily usage from the summary tables (scope read)",
                "parameters": [_USER,
                               {"name": "from", "in": "query", "required": True, "schema": date},
                               {"name": "to", "in": "query", "required": True, "schema": date}],
                "responses": {"200": _json(_ref("Usage"), "One row per day"), **_USER_ERRORS},
            }},
            "/healthz": {"get": {"summary": "The process is up", "security": [],
                                 "responses": {"200": {"description": "Up"}}}},
            "/readyz": {"get": {"summary": "PostgreSQL and Kafka are reachable", "security": [],
                                "responses": {"200": {"description": "Ready"},
                                              "503": _problem("Not ready")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                                 "responses": {"200": {"description": "Exposition"}}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [],
                                      "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "`usage-pipeline api-keys create`"}},
            "schemas": {
                **definitions,
                "UsageEvent": event,
                "EventResult": result,
                "IngestResult": {"type": "object", "required": ["accepted", "rejected", "results"],
                                 "properties": {"accepted": {"type": "integer"},
                                                "rejected": {"type": "integer"},
                                                "results": {"type": "array",
                                                            "items": _ref("EventResult")}}},
                "Balance": {"type": "object", "properties": {
                    "user_id": {"type": "string", "format": "uuid"},
                    "balance": {"type": "integer", "description": "Credits, exact."},
                    "low_balance_credits": {"type": "integer"},
                    "status": {"enum": ["ok", "low", "exhausted", "overdrawn"]},
                    "soonest_expiry": {"type": ["string", "null"], "format": "date-time"},
                    "as_of": {"type": "string", "format": "date-time"}}},
                "Entitlement": {"type": "object", "properties": {
                    "user_id": {"type": "string", "format": "uuid"},
                    "allowed": {"type": "boolean"}, "credits": {"type": "integer"},
                    "balance": {"type": "integer"}, "shortfall": {"type": "integer"},
                    "status": {"enum": ["ok", "low", "exhausted", "overdrawn"]},
                    "as_of": {"type": "string", "format": "date-time"}}},
                "Usage": {"type": "object", "properties": {
                    "user_id": {"type": "string", "format": "uuid"},
                    "from": date, "to": date,
                    "days": {"type": "array", "items": {"type": "object",
                             "description": "The columns of `report daily`; money as "
                                            "decimal strings."}}}},
                "Problem": {"type": "object", "required": ["type", "title", "status"],
                            "properties": {
                                "type": {"enum": [problems.TYPE_PREFIX + s
                                                  for s in problems.KINDS]},
                                "title": {"type": "string"}, "status": {"type": "integer"},
                                "detail": {"type": "string"}, "instance": {"type": "string"}}},
            },
        },
    }  # fmt: skip


def rendered() -> str:
    return json.dumps(document(), indent=2) + "\n"
