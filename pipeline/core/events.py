"""Usage event contract v1: the pydantic model, provider `usage` normalization, decoding.

Gateways publish one JSON object per model request to `usage.events`, keyed by `user_id`.
They may send our flat token fields, or the provider's own `usage` object (OpenAI or
Anthropic shape); both are normalized to the flat fields here. Decoding never raises: it
returns the event or a `Rejection` with a reason code, so the caller can dead-letter it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid5

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from pipeline.errors import Reason

_MILLISECOND = timedelta(milliseconds=1)
_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens")
GATEWAY_COST_LIMIT = 10**8
"""Above it, no gateway cost fits token_usage_ledger.gateway_cost_usd (NUMERIC(18,10))."""
GATEWAY_USER_NAMESPACE = UUID("5f1c2b8e-7d4a-4c3b-9e61-2a8f0d9c4b77")


def gateway_alias(gateway: str, external_id: str) -> UUID:
    """The `user_id` an event of a gateway's own user carries until the worker links it
    (`gateway_user_links`) to one of ours: a UUIDv5 of the pair, the same every time."""
    return uuid5(GATEWAY_USER_NAMESPACE, f"{gateway}\x1f{external_id}")


class GatewayUser(BaseModel):
    """A user as a gateway knows them (LiteLLM's user, team or end-user id)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gateway: str = Field(pattern=r"^[a-z0-9_-]{1,50}$", description="e.g. `litellm`.")
    id: str = Field(min_length=1, max_length=255, description="The gateway's id of the user.")


class RequestStatus(StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"
    PARTIAL = "partial"


class UsageEvent(BaseModel):
    """One model request as seen by a gateway (contract v1)."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    request_id: UUID = Field(description="Unique id of the model request; the idempotency key.")
    user_id: UUID = Field(description="The user billed for the request.")
    subscription_id: UUID | None = Field(default=None, description="The user's subscription.")
    provider: str = Field(
        min_length=1, max_length=100, description="Provider name or api_type, e.g. `openai`."
    )
    model: str = Field(
        min_length=1, max_length=255, description="Model name as in `model_provider_pricing`."
    )
    input_tokens: int = Field(
        ge=0, le=2**31 - 1, description="All prompt tokens, cached ones included."
    )
    output_tokens: int = Field(ge=0, le=2**31 - 1, description="Completion tokens.")
    cached_input_tokens: int = Field(
        default=0, ge=0, le=2**31 - 1, description="Prompt tokens served from the cache (hits)."
    )
    cache_write_tokens: int = Field(
        default=0, ge=0, le=2**31 - 1, description="Prompt tokens written to the cache."
    )
    request_type: str = Field(default="completion", min_length=1, max_length=20)
    streaming_segments: int | None = Field(default=None, ge=0, le=2**31 - 1)
    started_at: AwareDatetime = Field(description="RFC 3339 with offset; prices apply as of it.")
    completed_at: AwareDatetime = Field(description="RFC 3339 with offset; >= started_at.")
    status: RequestStatus = RequestStatus.SUCCESS
    error_message: str | None = Field(default=None, max_length=10_000)
    is_streaming_complete: bool = True
    region: str | None = Field(default=None, max_length=50)
    gateway_user: GatewayUser | None = Field(
        default=None,
        exclude=True,
        description=(
            "Contract v1.2: the gateway's own user, when the gateway does not know ours. "
            "`user_id` must then be `gateway_alias(gateway, id)` (UUIDv5, namespace "
            f"{GATEWAY_USER_NAMESPACE}, name `gateway` + U+001F + `id`); the worker books "
            "the event for the user linked to it (`usage-pipeline gateway-users link`), "
            "and dead-letters it as unknown_user if there is none."
        ),
    )

    gateway_cost_usd: Decimal | None = Field(
        default=None,
        ge=0,
        lt=GATEWAY_COST_LIMIT,
        exclude=True,
        description=(
            "Contract v1.3: what the gateway itself computed the request cost (LiteLLM's "
            "`response_cost`). Recorded next to our price to compare them, never billed "
            "from, and not part of the request's identity."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _normalize_usage(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "usage" not in data:
            return data
        flat = {k: v for k, v in data.items() if k != "usage"}
        given = [f for f in _TOKEN_FIELDS if f in flat]
        if given:
            raise ValueError(f"send either `usage` or the token fields, not both ({given[0]})")
        flat.update(normalize_usage(data["usage"]))
        return flat

    @model_validator(mode="after")
    def _check_consistency(self) -> UsageEvent:
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError(
                "cached_input_tokens + cache_write_tokens exceed input_tokens "
                f"({self.cached_input_tokens} + {self.cache_write_tokens} > {self.input_tokens})"
            )
        if self.completed_at < self.started_at:
            raise ValueError("completed_at is before started_at")
        linked = self.gateway_user
        if linked is not None and self.user_id != gateway_alias(linked.gateway, linked.id):
            raise ValueError("user_id is not the alias of gateway_user (gateway_alias)")
        return self

    @property
    def processing_time_ms(self) -> int:
        return (self.completed_at - self.started_at) // _MILLISECOND

    def fingerprint(self) -> bytes:
        """sha256 of the normalized event: equal for a redelivery, different for a conflict.

        The model serializes its fields in declaration order, so its compact JSON is
        canonical for a given contract version.
        """
        return hashlib.sha256(self.__pydantic_serializer__.to_json(self)).digest()


def normalize_usage(usage: Any) -> dict[str, Any]:
    """Map a provider's `usage` object to our token fields.

    OpenAI: `prompt_tokens` (cached included), `completion_tokens`,
    `prompt_tokens_details.cached_tokens`. Anthropic: `input_tokens` (uncached only),
    `output_tokens`, `cache_read_input_tokens`, `cache_creation_input_tokens`; its prompt
    total is the sum of the three input counts.
    """
    if not isinstance(usage, dict):
        raise ValueError("`usage` must be an object")
    if "prompt_tokens" in usage:
        details = usage.get("prompt_tokens_details") or {}
        if not isinstance(details, dict):
            raise ValueError("`usage.prompt_tokens_details` must be an object")
        return {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage.get("completion_tokens", 0),
            "cached_input_tokens": details.get("cached_tokens") or 0,
            "cache_write_tokens": 0,
        }
    if "input_tokens" in usage:
        read = usage.get("cache_read_input_tokens") or 0
        write = usage.get("cache_creation_input_tokens") or 0
        counts = (usage["input_tokens"], read, write)
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            raise ValueError("`usage` token counts must be integers")
        return {
            "input_tokens": sum(counts),
            "output_tokens": usage.get("output_tokens", 0),
            "cached_input_tokens": read,
            "cache_write_tokens": write,
        }
    raise ValueError(
        "`usage` is neither OpenAI (prompt_tokens) nor Anthropic (input_tokens) shaped"
    )


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event cannot be booked; becomes a dead-letter record."""

    reason: Reason
    detail: str


Decoded = UsageEvent | Rejection


def decode(raw: bytes | None, now: datetime, max_future_skew: timedelta) -> Decoded:
    """Validate one raw event (JSON parsed and checked by pydantic in one pass). Never raises."""
    if raw is None:
        return Rejection(Reason.MALFORMED_JSON, "empty message value")
    try:
        event = UsageEvent.model_validate_json(raw)
    except ValidationError as exc:
        return rejection(exc)
    return check_skew(event, now, max_future_skew)


def check_skew(event: UsageEvent, now: datetime, max_future_skew: timedelta) -> Decoded:
    """The event, or a rejection if it started more than `max_future_skew` after `now`."""
    if event.started_at > now + max_future_skew:
        return Rejection(
            Reason.SCHEMA_VIOLATION,
            f"started_at {event.started_at.isoformat()} is more than "
            f"{int(max_future_skew.total_seconds())}s in the future",
        )
    return event


def rejection(exc: ValidationError) -> Rejection:
    """The rejection of an event pydantic refused (malformed JSON or a schema violation)."""
    errors = exc.errors(include_url=False)
    first = errors[0] if errors else None
    if first is not None and first["type"] == "json_invalid":
        return Rejection(Reason.MALFORMED_JSON, first["msg"])
    if first is not None and first["type"] == "model_type" and not first["loc"]:
        return Rejection(Reason.SCHEMA_VIOLATION, "event must be a JSON object")
    return Rejection(Reason.SCHEMA_VIOLATION, _summarize(errors))


def _summarize(errors: list[ErrorDetails]) -> str:
    parts = []
    for err in errors[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of contract v1, as shipped in `schemas/usage-event.v1.json`."""
    schema = UsageEvent.model_json_schema()
    schema["$id"] = "usage-event.v1.json"
    schema["title"] = "UsageEvent v1"
    return schema
