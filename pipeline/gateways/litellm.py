"""LiteLLM's `StandardLoggingPayload` (what its callbacks and its `generic_api` logger
hand out, one per model call) mapped to a contract event: pure, never raises.

- request_id: a UUIDv5 of the call id and the status. LiteLLM may log one success twice
  (both book once), and a fallback logs a failure and then a success under one call id
  (two requests: the failed attempt and the one that answered).
- the billed user: LiteLLM's ids are strings, so the event names the gateway user
  (`gateway_user`, contract v1.2) and the worker books it for the user linked to it.
  Which id bills is a choice (`UserSource`): the key's user, its team, the request's
  `user` (end user), or a request tag.
- provider and model: `custom_llm_provider`, and `model` stripped of its provider prefix
  exactly as our import names a catalog key (`pipeline.money.catalog`), so LiteLLM's names
  find the prices imported from its own price map.
- tokens: LiteLLM's usage object, in its own semantics: `prompt_tokens` counts every
  prompt token, cache hits (`prompt_tokens_details.cached_tokens`) and cache writes
  (`cache_creation_input_tokens`) included, as contract v1's `input_tokens` does. Its
  details are contract v1.4's counts, sent only when not zero (so a plain call stays a
  v1.3 event): OpenAI's audio, image and reasoning details (`openai_details`), one-hour
  cache writes (`prompt_tokens_details.cache_creation_token_details`, LiteLLM's copy of
  Anthropic's `cache_creation`), web-search queries (`server_tool_use`, or
  `prompt_tokens_details.web_search_requests` for Gemini's grounding).
- service tier: the one the provider reports (`response.service_tier`, else the usage
  object's, as LiteLLM reads it), else the one LiteLLM priced the call on
  (`cost_breakdown.service_tier`, its reading of the tier the call asked for); standard
  when none says, a tier the contract does not know (`scale`, LiteLLM's `fast`) refused.
- times: `startTime`/`endTime` (epoch seconds); status: success, or error with its message.
- LiteLLM's own `response_cost` rides along as `gateway_cost_usd` (contract v1.3), a hint
  the books keep next to our price and never bill from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid5

from pipeline.core.events import (
    GATEWAY_COST_LIMIT,
    Rejection,
    ServiceTier,
    count_in,
    gateway_alias,
    object_in,
    openai_details,
    service_tier_of,
)
from pipeline.errors import Reason
from pipeline.money.catalog import model_name_for, provider_for

GATEWAY = "litellm"
REQUEST_NAMESPACE = UUID("c7a3e0d2-4b1f-4e8a-b6d5-91f2a7c3e408")
MAX_ERROR_MESSAGE = 10_000
GATEWAY_COST_EXPONENT = Decimal("1e-10")  # NUMERIC(18,10) of token_usage_ledger.gateway_cost_usd
_CALL_TYPES = {"completion": "completion", "text_completion": "text_completion",
               "embedding": "embedding", "responses": "responses"}  # fmt: skip


class UserSource(StrEnum):
    """Which of a payload's ids names the billed user (LITELLM_USER_SOURCE)."""

    KEY_USER = "user_api_key_user_id"
    """The user the virtual key belongs to (`metadata.user_api_key_user_id`)."""
    TEAM = "user_api_key_team_id"
    """The key's team (`metadata.user_api_key_team_id`): a team is billed as one user."""
    END_USER = "end_user"
    """The request's `user` field, as the OpenAI API defines it."""
    TAG = "tag"
    """A request tag `<prefix><id>` (`metadata.tags`); the prefix is the setting's rest."""


@dataclass(frozen=True, slots=True)
class BilledUser:
    source: UserSource
    tag_prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> BilledUser:
        """`user_api_key_user_id`, `user_api_key_team_id`, `end_user` or `tag:<prefix>`."""
        name, sep, prefix = text.partition(":")
        source = UserSource(name)  # ValueError names the value
        if (source is UserSource.TAG) != bool(sep and prefix):
            raise ValueError("the tag source is written tag:<prefix>, e.g. tag:customer=")
        return cls(source, prefix)

    def of(self, payload: Mapping[str, Any]) -> str | None:
        metadata = payload.get("metadata") or {}
        if self.source is UserSource.END_USER:
            found = payload.get("end_user")
        elif self.source is UserSource.TAG:
            prefix, tags = self.tag_prefix, payload.get("request_tags") or []
            found = next((t[len(prefix) :] for t in tags
                          if isinstance(t, str) and t.startswith(prefix)), None)  # fmt: skip
        else:
            found = metadata.get(self.source.value) if isinstance(metadata, Mapping) else None
        return found if isinstance(found, str) and found.strip() else None


def to_event(payload: Any, billed: BilledUser) -> dict[str, Any] | Rejection:
    """The contract event (JSON-ready) of one payload, or why it cannot be one."""
    if not isinstance(payload, Mapping):
        return Rejection(Reason.SCHEMA_VIOLATION, "a LiteLLM payload must be a JSON object")
    call_id = payload.get("litellm_call_id") or payload.get("id")
    status = payload.get("status")
    if not isinstance(call_id, str) or not call_id:
        return Rejection(Reason.SCHEMA_VIOLATION, "the payload has no litellm_call_id")
    if status not in ("success", "failure"):
        return Rejection(Reason.SCHEMA_VIOLATION, f"status {status!r} is not success or failure")
    external = billed.of(payload)
    if external is None:
        return Rejection(Reason.UNKNOWN_USER, f"call {call_id} names no {billed.source.value}")
    provider = payload.get("custom_llm_provider")
    model = payload.get("model")
    if not isinstance(provider, str) or not provider:
        return Rejection(Reason.UNKNOWN_PROVIDER, f"call {call_id} names no provider")
    if not isinstance(model, str) or not model:
        return Rejection(Reason.UNKNOWN_MODEL, f"call {call_id} names no model")
    try:
        started, completed = _time(payload["startTime"]), _time(payload["endTime"])
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return Rejection(Reason.SCHEMA_VIOLATION, f"call {call_id}: startTime/endTime unreadable")
    try:
        counts = tokens(payload)
    except ValueError as exc:
        return Rejection(Reason.SCHEMA_VIOLATION, f"call {call_id}: {exc}")
    failed = status == "failure"
    error = payload.get("error_str") or (payload.get("error_information") or {}).get(
        "error_message"
    )
    return {
        "request_id": str(uuid5(REQUEST_NAMESPACE, f"{call_id}:{status}")),
        "user_id": str(gateway_alias(GATEWAY, external)),
        "gateway_user": {"gateway": GATEWAY, "id": external},
        "provider": provider_for(provider).api_type,
        "model": model_name_for(model, provider),
        **counts,
        "request_type": _request_type(payload.get("call_type")),
        "started_at": started.isoformat(),
        "completed_at": max(started, completed).isoformat(),
        "status": "error" if failed else "success",
        "error_message": str(error)[:MAX_ERROR_MESSAGE] if failed and error else None,
        "is_streaming_complete": not (failed and payload.get("stream") is True),
        **_cost_hint(payload.get("response_cost")),
    }


def _cost_hint(cost: Any) -> dict[str, str]:
    """LiteLLM's own `response_cost` (a binary float) as the event's `gateway_cost_usd`,
    to 10 decimals: recorded to compare with our price, never billed from."""
    if isinstance(cost, bool) or not isinstance(cost, int | float):
        return {}
    hint = Decimal(str(cost))
    if not hint.is_finite() or not 0 <= hint < GATEWAY_COST_LIMIT:
        return {}
    return {"gateway_cost_usd": str(hint.quantize(GATEWAY_COST_EXPONENT))}


def tokens(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The contract's token counts and service tier from LiteLLM's usage object (in the
    metadata, or the response's), else its top-level counts. The four v1 counts are passed
    on as found (the contract's validation refuses what is not a count); a v1.4 detail
    that is not a count raises ValueError."""
    metadata = payload.get("metadata") or {}
    response = payload.get("response")
    usage = (metadata.get("usage_object") if isinstance(metadata, Mapping) else None) or (
        response.get("usage") if isinstance(response, Mapping) else None
    )
    if not isinstance(usage, Mapping) or "prompt_tokens" not in usage:
        usage = {"prompt_tokens": payload.get("prompt_tokens", 0),
                 "completion_tokens": payload.get("completion_tokens", 0)}  # fmt: skip
    details = usage.get("prompt_tokens_details") or {}
    if not isinstance(details, Mapping):
        details = {}
    counts = {
        "input_tokens": usage.get("prompt_tokens") or 0,
        "output_tokens": usage.get("completion_tokens") or 0,
        "cached_input_tokens": details.get("cached_tokens")
        or usage.get("cache_read_input_tokens")
        or 0,
        "cache_write_tokens": usage.get("cache_creation_input_tokens")
        or details.get("cache_write_tokens")
        or details.get("cache_creation_tokens")
        or 0,
    }
    extra = {**openai_details(usage), **_litellm_details(usage)}
    tier = _service_tier(payload, response, usage)
    return (
        counts
        | {name: count for name, count in extra.items() if count}
        | ({"service_tier": tier.value} if tier is not ServiceTier.STANDARD else {})
    )


def _litellm_details(usage: Mapping[str, Any]) -> dict[str, int]:
    """The v1.4 counts LiteLLM's usage object keeps where OpenAI's has none."""
    where = "usage.prompt_tokens_details"
    details = object_in(usage, "prompt_tokens_details", "usage")
    creation = object_in(details, "cache_creation_token_details", where)
    tools = object_in(usage, "server_tool_use", "usage")
    return {
        "cache_write_1h_tokens": count_in(
            creation, "ephemeral_1h_input_tokens", f"{where}.cache_creation_token_details"
        ),
        "web_search_requests": count_in(tools, "web_search_requests", "usage.server_tool_use")
        or count_in(details, "web_search_requests", where),
    }


def _service_tier(
    payload: Mapping[str, Any], response: Any, usage: Mapping[str, Any]
) -> ServiceTier:
    served = response.get("service_tier") if isinstance(response, Mapping) else None
    breakdown = payload.get("cost_breakdown")
    priced = breakdown.get("service_tier") if isinstance(breakdown, Mapping) else None
    for where, spelling in (
        ("response.service_tier", served),
        ("usage.service_tier", usage.get("service_tier")),
        ("cost_breakdown.service_tier", priced),
    ):
        tier = service_tier_of(spelling, where)
        if tier is not None:
            return tier
    return ServiceTier.STANDARD


def _time(epoch_seconds: Any) -> datetime:
    if isinstance(epoch_seconds, bool) or not isinstance(epoch_seconds, int | float):
        raise TypeError("not a number")
    return datetime.fromtimestamp(epoch_seconds, UTC)


def _request_type(call_type: Any) -> str:
    """LiteLLM's call type without its async `a` prefix (acompletion -> completion)."""
    if not isinstance(call_type, str) or not call_type:
        return "completion"
    plain = (
        call_type[1:] if call_type.startswith("a") and call_type[1:] in _CALL_TYPES else call_type
    )
    return _CALL_TYPES.get(plain, plain)[:20]
