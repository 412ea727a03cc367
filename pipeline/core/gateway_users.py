"""Events of a gateway's own users, booked for the users linked to them (contract v1.2).

Pure: `wanted` lists the (gateway, external id) pairs a batch names; `linked` takes the
links found for them and gives each such event our user's id, or the rejection of an
unlinked one. Events that name our user directly pass through untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

from pipeline.core.events import Decoded, Rejection, UsageEvent
from pipeline.errors import Reason

Pair = tuple[str, str]
"""(gateway, the gateway's id of the user)."""


def wanted(decoded: Sequence[Decoded]) -> list[Pair]:
    """The distinct gateway users the batch's events name, in first-seen order."""
    pairs = (
        (d.gateway_user.gateway, d.gateway_user.id)
        for d in decoded
        if isinstance(d, UsageEvent) and d.gateway_user is not None
    )
    return list(dict.fromkeys(pairs))


def linked(decoded: Sequence[Decoded], links: Mapping[Pair, UUID]) -> list[Decoded]:
    """Each event of a gateway user with our user's id, or unknown_user when unlinked."""
    return [_link(d, links) for d in decoded]


def _link(item: Decoded, links: Mapping[Pair, UUID]) -> Decoded:
    if not isinstance(item, UsageEvent) or item.gateway_user is None:
        return item
    named = item.gateway_user
    user = links.get((named.gateway, named.id))
    if user is None:
        return Rejection(
            Reason.UNKNOWN_USER,
            f"no user is linked to {named.gateway} user {named.id!r} "
            f"(usage-pipeline gateway-users link {named.gateway} ID USER_ID)",
        )
    return item.model_copy(update={"user_id": user})
