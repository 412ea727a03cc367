"""Usage event contract v1: the pydantic model, provider `usage` normalization, decoding.

Gateways publish one JSON object per model request to `usage.events`, keyed by `user_id`.
They may send our flat token fields, or the provider's own `usage` object (OpenAI,
Anthropic or Gemini shape); both are normalized to the flat fields here. Decoding never
raises: it returns the event or a `Rejection` with a reason code, so the caller can
dead-letter it.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections import Counter
from collections.abc import Mapping
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
from pydantic_core import ErrorDetails, SchemaValidator

from pipeline.errors import Reason

_MILLISECOND = timedelta(milliseconds=1)
_DETAIL_COUNTS = ("cache_write_1h_tokens", "reasoning_tokens", "audio_input_tokens",
                  "image_input_tokens", "audio_output_tokens", "web_search_requests")  # fmt: skip
_details_of = operator.attrgetter(*_DETAIL_COUNTS)
_USAGE_COUNTS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
                 *_DETAIL_COUNTS)  # fmt: skip
"""The fields a provider's `usage` object stands for."""
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


class ServiceTier(StrEnum):
    """The capacity a provider served the request from (contract v1.4); it picks the price."""

    STANDARD = "standard"
    BATCH = "batch"
    FLEX = "flex"
    PRIORITY = "priority"


_PROVIDER_TIERS = {
    "standard": ServiceTier.STANDARD,
    "default": ServiceTier.STANDARD,  # OpenAI's answer for its standard tier
    "auto": ServiceTier.STANDARD,  # OpenAI's request value
    "standard_only": ServiceTier.STANDARD,  # Anthropic's request value
    "batch": ServiceTier.BATCH,
    "flex": ServiceTier.FLEX,
    "priority": ServiceTier.PRIORITY,
}


def service_tier_of(spelling: Any, where: str) -> ServiceTier | None:
    """A provider's service tier (any case) as ours; None when it names none (null).

    OpenAI answers `default`, `flex` or `priority` (`auto` and `standard_only` are request
    values, read as standard); Anthropic `standard`, `priority` or `batch`. Any other
    value (OpenAI's `scale`, say) is refused rather than billed at a guessed price.
    """
    if spelling is None:
        return None
    tier = _PROVIDER_TIERS.get(spelling.strip().lower()) if isinstance(spelling, str) else None
    if tier is None:
        raise ValueError(
            f"`{where}` {spelling!r} is not a service tier we bill "
            "(standard, batch, flex, priority; OpenAI's default and auto are standard)"
        )
    return tier


class UsageEvent(BaseModel):
    """One model request as seen by a gateway (contract v1.4)."""

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

    # Contract v1.4. Left out of the serialization, so the fingerprint of an event that
    # uses none of them is what it was before v1.4 (`fingerprint`).
    service_tier: ServiceTier = Field(
        default=ServiceTier.STANDARD,
        exclude=True,
        description="Contract v1.4: the tier the provider served the request from.",
    )
    cache_write_1h_tokens: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        exclude=True,
        description=(
            "Contract v1.4: the part of `cache_write_tokens` written with a one-hour "
            "lifetime (Anthropic's `ephemeral_1h_input_tokens`)."
        ),
    )
    reasoning_tokens: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        exclude=True,
        description="Contract v1.4: the part of `output_tokens` that is reasoning.",
    )
    audio_input_tokens: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        exclude=True,
        description="Contract v1.4: uncached audio prompt tokens, a part of `input_tokens`.",
    )
    image_input_tokens: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        exclude=True,
        description="Contract v1.4: uncached image prompt tokens, a part of `input_tokens`.",
    )
    audio_output_tokens: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        exclude=True,
        description="Contract v1.4: the part of `output_tokens` that is audio.",
    )
    web_search_requests: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        exclude=True,
        description="Contract v1.4: web-search tool queries the request made (billed per query).",
    )

    @model_validator(mode="before")
    @classmethod
    def _normalize_usage(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "usage" not in data:
            return data
        flat = {k: v for k, v in data.items() if k != "usage"}
        given = [f for f in _USAGE_COUNTS if f in flat]
        if given:
            raise ValueError(f"send either `usage` or the token fields, not both ({given[0]})")
        counts = normalize_usage(data["usage"])
        # Beside `usage`, `service_tier` is the provider's response field (OpenAI's is there).
        tier = service_tier_of(flat.pop("service_tier", None), "service_tier")
        reported = counts.get("service_tier")
        if tier is not None and reported is not None and tier is not reported:
            raise ValueError(
                f"service_tier {tier.value} and usage.service_tier {reported.value} disagree"
            )
        flat.update(counts)
        if tier is not None:
            flat["service_tier"] = tier
        return flat

    @model_validator(mode="after")
    def _check_consistency(self) -> UsageEvent:
        cached, written = self.cached_input_tokens, self.cache_write_tokens
        prompt = self.input_tokens
        if cached + written + self.audio_input_tokens + self.image_input_tokens > prompt:
            if cached + written > prompt:
                raise ValueError(
                    "cached_input_tokens + cache_write_tokens exceed input_tokens "
                    f"({cached} + {written} > {prompt})"
                )
            prompt_parts = (cached, written, self.audio_input_tokens, self.image_input_tokens)
            raise ValueError(
                "cached_input_tokens + cache_write_tokens + audio_input_tokens + "
                "image_input_tokens exceed input_tokens "
                f"({' + '.join(map(str, prompt_parts))} > {prompt})"
            )
        if self.cache_write_1h_tokens > written:
            raise ValueError(
                "cache_write_1h_tokens exceed cache_write_tokens "
                f"({self.cache_write_1h_tokens} > {self.cache_write_tokens})"
            )
        if self.reasoning_tokens + self.audio_output_tokens > self.output_tokens:
            raise ValueError(
                "reasoning_tokens + audio_output_tokens exceed output_tokens "
                f"({self.reasoning_tokens} + {self.audio_output_tokens} > {self.output_tokens})"
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
        canonical for a given contract version. The v1.4 fields are left out of it and,
        only when one of them is not its default, follow it as their own compact JSON: the
        fingerprint of an event booked before v1.4 stays what the ledger holds.
        """
        digest = hashlib.sha256(self.__pydantic_serializer__.to_json(self))
        counts = _details_of(self)
        if self.service_tier is not ServiceTier.STANDARD or any(counts):
            details: dict[str, str | int] = {"service_tier": self.service_tier.value}
            details.update(zip(_DETAIL_COUNTS, counts, strict=True))
            digest.update(json.dumps(details, separators=(",", ":")).encode())
        return digest.digest()


def normalize_usage(usage: Any) -> dict[str, Any]:
    """Map a provider's `usage` object to our token fields (and `service_tier`, if it says).

    Told apart by their prompt count: OpenAI's `prompt_tokens`, Anthropic's `input_tokens`,
    Gemini's `promptTokenCount`. A null or absent detail counts 0; a detail that is there
    must be an integer. `usage.service_tier` is read in any shape.
    """
    if not isinstance(usage, dict):
        raise ValueError("`usage` must be an object")
    if "prompt_tokens" in usage:
        flat = _openai_usage(usage)
    elif "input_tokens" in usage:
        flat = _anthropic_usage(usage)
    elif "promptTokenCount" in usage:
        flat = _gemini_usage(usage)
    else:
        raise ValueError(
            "`usage` is neither OpenAI (prompt_tokens), Anthropic (input_tokens) nor Gemini "
            "(promptTokenCount) shaped"
        )
    tier = service_tier_of(usage.get("service_tier"), "usage.service_tier")
    if tier is not None:
        flat["service_tier"] = tier
    return flat


def _openai_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI: `prompt_tokens` counts every prompt token; `prompt_tokens_details` says how
    many were cache hits (`cached_tokens`) and cache writes (`cache_write_tokens`, or
    LiteLLM's `cache_creation_tokens`); the v1.4 details as `openai_details` reads them."""
    prompt = object_in(usage, "prompt_tokens_details", "usage")
    write = (
        "cache_write_tokens" if prompt.get("cache_write_tokens") is not None
        else "cache_creation_tokens"
    )  # fmt: skip
    return {
        "input_tokens": usage["prompt_tokens"],
        "output_tokens": usage.get("completion_tokens", 0),
        "cached_input_tokens": prompt.get("cached_tokens") or 0,
        "cache_write_tokens": count_in(prompt, write, "usage.prompt_tokens_details"),
        **openai_details(usage),
    }


def openai_details(usage: Mapping[str, Any]) -> dict[str, int]:
    """The v1.4 counts of an OpenAI-shaped usage object (LiteLLM's is one too).

    `prompt_tokens_details.audio_tokens` and `image_tokens` count cached tokens too; the
    realtime API's `cached_tokens_details` says how many of them were hits, which count
    as hits only. `completion_tokens_details.reasoning_tokens` and `audio_tokens` are
    parts of `completion_tokens`.
    """
    where = "usage.prompt_tokens_details"
    prompt = object_in(usage, "prompt_tokens_details", "usage")
    hits = object_in(prompt, "cached_tokens_details", where)
    completion = object_in(usage, "completion_tokens_details", "usage")

    def uncached(name: str) -> int:
        hit = count_in(hits, name, f"{where}.cached_tokens_details")
        return max(count_in(prompt, name, where) - hit, 0)

    def output(name: str) -> int:
        return count_in(completion, name, "usage.completion_tokens_details")

    return {
        "audio_input_tokens": uncached("audio_tokens"),
        "image_input_tokens": uncached("image_tokens"),
        "reasoning_tokens": output("reasoning_tokens"),
        "audio_output_tokens": output("audio_tokens"),
    }


def _anthropic_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic: `input_tokens` (uncached only), `output_tokens`, `cache_read_input_tokens`,
    `cache_creation_input_tokens` (all writes; else the sum of its breakdown
    `cache_creation.ephemeral_5m_input_tokens` and `ephemeral_1h_input_tokens`);
    `server_tool_use.web_search_requests`. Its prompt total is the sum of the three input
    counts."""
    creation = object_in(usage, "cache_creation", "usage")
    one_hour = count_in(creation, "ephemeral_1h_input_tokens", "usage.cache_creation")
    read = usage.get("cache_read_input_tokens") or 0
    write = usage.get("cache_creation_input_tokens")
    if write is None:
        write = count_in(creation, "ephemeral_5m_input_tokens", "usage.cache_creation") + one_hour
    counts = (usage["input_tokens"], read, write)
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        raise ValueError("`usage` token counts must be integers")
    tools = object_in(usage, "server_tool_use", "usage")
    return {
        "input_tokens": sum(counts),
        "output_tokens": usage.get("output_tokens", 0),
        "cached_input_tokens": read,
        "cache_write_tokens": write,
        "cache_write_1h_tokens": one_hour,
        "web_search_requests": count_in(tools, "web_search_requests", "usage.server_tool_use"),
    }


def _gemini_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Gemini's `usageMetadata`: `promptTokenCount` (cached included),
    `cachedContentTokenCount`, `candidatesTokenCount` and `thoughtsTokenCount`, which it
    bills as output; `promptTokensDetails` (and `cacheTokensDetails`, the hits) count
    tokens by modality. Vertex has reported candidates with the thoughts already in them:
    `totalTokenCount` tells. `toolUsePromptTokenCount` is not counted."""
    prompt = count_in(usage, "promptTokenCount", "usage")
    candidates = count_in(usage, "candidatesTokenCount", "usage")
    thoughts = count_in(usage, "thoughtsTokenCount", "usage")
    tool_use = count_in(usage, "toolUsePromptTokenCount", "usage")
    thoughts_included = usage.get("totalTokenCount") == prompt + candidates + tool_use
    by_modality = _modalities(usage, "promptTokensDetails")
    hits = _modalities(usage, "cacheTokensDetails")
    return {
        "input_tokens": prompt,
        "output_tokens": candidates if thoughts_included else candidates + thoughts,
        "cached_input_tokens": count_in(usage, "cachedContentTokenCount", "usage"),
        "cache_write_tokens": 0,
        "audio_input_tokens": max(by_modality["AUDIO"] - hits["AUDIO"], 0),
        "image_input_tokens": max(by_modality["IMAGE"] - hits["IMAGE"], 0),
        "reasoning_tokens": thoughts,
    }


def count_in(details: Mapping[str, Any], name: str, where: str) -> int:
    """One count of a provider's usage object: 0 when null or absent."""
    value = details.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"`{where}.{name}` must be an integer, not {value!r}")
    return value


def object_in(usage: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    """A nested object of a provider's usage object: empty when null or absent."""
    value = usage.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"`{where}.{name}` must be an object")
    return value


def _modalities(usage: Mapping[str, Any], name: str) -> Counter[str]:
    """Gemini's list of `{modality, tokenCount}` as tokens by modality (upper case)."""
    entries = usage.get(name)
    if entries is None:
        return Counter()
    if not isinstance(entries, list):
        raise ValueError(f"`usage.{name}` must be a list")
    tokens: Counter[str] = Counter()
    for i, entry in enumerate(entries):
        where = f"usage.{name}[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("modality"), str):
            raise ValueError(f"`{where}` must be an object with a modality")
        tokens[entry["modality"].upper()] += count_in(entry, "tokenCount", where)
    return tokens


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event cannot be booked; becomes a dead-letter record."""

    reason: Reason
    detail: str


Decoded = UsageEvent | Rejection


def _flat_schema() -> Any:
    """UsageEvent's core schema without its `usage` normalization (`_normalize_usage`).

    A model's before-validator makes pydantic turn the JSON into Python objects first and
    validate those, which is half the cost of decoding. An event without `usage` (which
    this schema refuses, as an extra field) validates to the same `UsageEvent` through
    this schema, its after-validator included, straight from the JSON.
    """
    after: Any = UsageEvent.__pydantic_core_schema__
    model = after["schema"]
    before = model["schema"]
    shape = (after["type"], model["type"], model["cls"], before["type"])
    if shape != ("function-after", "model", UsageEvent, "function-before"):
        raise RuntimeError(f"UsageEvent's core schema has an unexpected shape {shape}")
    return {**after, "schema": {**model, "schema": before["schema"]}}


FLAT_EVENT_SCHEMA = _flat_schema()
"""UsageEvent's schema for events in the flat shape (no `usage` object)."""
_FLAT_EVENT = SchemaValidator(FLAT_EVENT_SCHEMA)


def validate_json(raw: bytes) -> UsageEvent:
    """`UsageEvent.model_validate_json`, about twice as fast for an event in the flat shape.

    Raises ValidationError. The flat schema is tried first unless the bytes mention
    `usage`; whatever it refuses goes through the model's own validation, which gives the
    verdict and its errors, so the result is the model's own in every case.
    """
    if b'"usage"' not in raw:
        try:
            event: UsageEvent = _FLAT_EVENT.validate_json(raw)
        except ValidationError:
            pass
        else:
            return event
    return UsageEvent.model_validate_json(raw)


def decode(raw: bytes | None, now: datetime, max_future_skew: timedelta) -> Decoded:
    """Validate one raw event (JSON parsed and checked by pydantic in one pass). Never raises."""
    if raw is None:
        return Rejection(Reason.MALFORMED_JSON, "empty message value")
    try:
        event = validate_json(raw)
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
