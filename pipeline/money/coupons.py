"""Coupon redemption: validate a credits coupon, record the redemption, grant its credits.

Credits = discount_value / USD_PER_CREDIT, rounded down (DESIGN.md money rules: USD 20 is
20,000 credits at the default USD 0.001, not the seed's "$1 = 1 credit"), granted through
`credits.grant` as credit type `coupon`, expiring at the coupon's `valid_until`, with the
idempotency key `coupon_redemption:<redemption id>`.

Refusals are data (`Refused` with a `Refusal` code). When the coupon and the user exist, a
refusal is recorded as a `coupon_redemption` row with status `failed` and the code as
`failure_reason` (an audit trail of attempts; the limits count `success` rows only); an
unknown code or user records nothing. A refusal never changes a balance.

Limits come from `coupon_usage_limit`; a coupon without that row has no total limit and
one use per user (the column's default), so a forgotten row cannot mint credits forever.
The usage-limit row is locked (after the user's balance row, the order every money
movement takes), so concurrent redemptions cannot exceed `max_total_uses`.

Validation rules: active `coupon_validation_rule` rows must all pass. `first_purchase_only`
(value true) refuses users who have bought anything: a paid invoice, a paid subscription
or a perpetual license. `min_purchase_usd` refuses when above 0, since a standalone credit
redemption purchases nothing. Any other active rule refuses (`unsupported_rule`): a rule
we cannot check must not be skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import tuple_row

from pipeline.errors import Refused
from pipeline.money.credits import Grant, grant, lock_balance


class Refusal(StrEnum):
    UNKNOWN_USER = "unknown_user"
    UNKNOWN_COUPON = "unknown_coupon"
    DELETED = "deleted"
    INACTIVE = "inactive"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    NOT_A_CREDITS_COUPON = "not_a_credits_coupon"
    WORTHLESS = "worthless"
    TOTAL_LIMIT_REACHED = "total_limit_reached"
    USER_LIMIT_REACHED = "user_limit_reached"
    FIRST_PURCHASE_ONLY = "first_purchase_only"
    MIN_PURCHASE = "min_purchase"
    UNSUPPORTED_RULE = "unsupported_rule"


@dataclass(frozen=True, slots=True)
class Redeemed:
    redemption_id: UUID
    coupon_id: UUID
    credits: int
    expires_at: datetime | None
    balance_before: int
    balance_after: int


@dataclass(frozen=True, slots=True)
class Coupon:
    id: UUID
    discount_type: str
    discount_value: Decimal
    valid_from: datetime
    valid_until: datetime | None
    is_active: bool
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class Limits:
    max_total_uses: int | None
    max_uses_per_user: int
    total_uses: int


NO_LIMITS_ROW = Limits(max_total_uses=None, max_uses_per_user=1, total_uses=0)


def credits_for(discount_usd: Decimal, usd_per_credit: Decimal) -> int:
    return int((discount_usd / usd_per_credit).to_integral_value(rounding=ROUND_DOWN))


def _rule_value(value: Any) -> Any:
    return value.get("value") if isinstance(value, dict) else value


def _usd(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def check(
    coupon: Coupon,
    limits: Limits,
    rules: list[tuple[str, Any]],
    *,
    now: datetime,
    user_uses: int,
    has_purchased: bool,
    usd_per_credit: Decimal,
) -> Refused[Refusal] | None:
    """Why this user may not redeem this coupon at `now`, or None (pure)."""
    if coupon.deleted_at is not None:
        return Refused(Refusal.DELETED, f"deleted {coupon.deleted_at.isoformat()}")
    if not coupon.is_active:
        return Refused(Refusal.INACTIVE, "the coupon is not active")
    if now < coupon.valid_from:
        return Refused(Refusal.NOT_YET_VALID, f"valid from {coupon.valid_from.isoformat()}")
    if coupon.valid_until is not None and now >= coupon.valid_until:
        return Refused(Refusal.EXPIRED, f"valid until {coupon.valid_until.isoformat()}")
    if coupon.discount_type != "credits":
        return Refused(Refusal.NOT_A_CREDITS_COUPON, f"discount type {coupon.discount_type}")
    if credits_for(coupon.discount_value, usd_per_credit) <= 0:
        return Refused(Refusal.WORTHLESS, f"USD {coupon.discount_value} is no whole credit")
    if limits.max_total_uses is not None and limits.total_uses >= limits.max_total_uses:
        return Refused(Refusal.TOTAL_LIMIT_REACHED, f"used {limits.total_uses} times")
    if user_uses >= limits.max_uses_per_user:
        return Refused(Refusal.USER_LIMIT_REACHED, f"redeemed {user_uses} times by this user")
    for rule_type, value in rules:
        wanted = _rule_value(value)
        if rule_type == "first_purchase_only":
            if wanted and has_purchased:
                return Refused(Refusal.FIRST_PURCHASE_ONLY, "the user has purchased before")
        elif rule_type == "min_purchase_usd" and (minimum := _usd(wanted)) is not None:
            if minimum > 0:
                return Refused(Refusal.MIN_PURCHASE, f"needs a purchase of USD {wanted}")
        else:
            return Refused(Refusal.UNSUPPORTED_RULE, f"cannot check rule {rule_type}")
    return None


def redeem(
    conn: psycopg.Connection[Any],
    user_id: UUID,
    code: str,
    now: datetime,
    usd_per_credit: Decimal,
) -> Redeemed | Refused[Refusal]:
    """Redeem coupon `code` for `user_id` in one transaction, credits included."""
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT 1 FROM users WHERE id = %s", (user_id,))
        if cur.fetchone() is None:
            return Refused(Refusal.UNKNOWN_USER, f"no user {user_id}")
        before = lock_balance(cur, user_id)
        cur.execute(
            """
            SELECT id, discount_type, discount_value, valid_from, valid_until, is_active,
                   deleted_at
            FROM coupon WHERE code = %s
            """,
            (code,),
        )
        found = cur.fetchone()
        if found is None:
            return Refused(Refusal.UNKNOWN_COUPON, f"no coupon {code!r}")
        coupon = Coupon(*found)
        cur.execute(
            """
            SELECT max_total_uses, max_uses_per_user, total_uses
            FROM coupon_usage_limit WHERE coupon_id = %s FOR UPDATE
            """,
            (coupon.id,),
        )
        limit_row = cur.fetchone()
        limits = Limits(*limit_row) if limit_row else NO_LIMITS_ROW
        cur.execute(
            """
            SELECT count(*) FROM coupon_redemption
            WHERE coupon_id = %s AND user_id = %s AND redemption_status = 'success'
            """,
            (coupon.id, user_id),
        )
        user_uses = int(_scalar(cur))
        cur.execute(
            "SELECT rule_type, rule_value FROM coupon_validation_rule "
            "WHERE coupon_id = %s AND is_active ORDER BY created_at, id",
            (coupon.id,),
        )
        rules = [(str(r[0]), r[1]) for r in cur.fetchall()]
        purchased = any(t == "first_purchase_only" for t, _ in rules) and _has_purchased(
            cur, user_id
        )
        refused = check(
            coupon, limits, rules, now=now, user_uses=user_uses, has_purchased=purchased,
            usd_per_credit=usd_per_credit,
        )  # fmt: skip
        if refused is not None:
            cur.execute(
                """
                INSERT INTO coupon_redemption (coupon_id, user_id, redemption_date,
                    discount_applied_usd, original_amount_usd, final_amount_usd,
                    redemption_status, failure_reason)
                VALUES (%s, %s, %s, 0, 0, 0, 'failed', %s)
                """,
                (coupon.id, user_id, now, str(refused.reason)),
            )
            return refused
        # The seed's convention: a credit is a negative final amount.
        cur.execute(
            """
            INSERT INTO coupon_redemption (coupon_id, user_id, redemption_date,
                discount_applied_usd, original_amount_usd, final_amount_usd, redemption_status)
            VALUES (%s, %s, %s, %s, 0, %s, 'success')
            RETURNING id
            """,
            (coupon.id, user_id, now, coupon.discount_value, -coupon.discount_value),
        )
        redemption_id = UUID(str(_scalar(cur)))
        cur.execute(
            """
            UPDATE coupon_usage_limit
            SET total_uses = total_uses + 1, unique_users = unique_users + %s,
                total_discount_applied_usd = total_discount_applied_usd + %s,
                updated_at = now()
            WHERE coupon_id = %s
            """,
            (1 if user_uses == 0 else 0, coupon.discount_value, coupon.id),
        )
        credits = credits_for(coupon.discount_value, usd_per_credit)
        granted = grant(
            conn,
            Grant(user_id, credits, "coupon", coupon.valid_until,
                  f"coupon_redemption:{redemption_id}"),
        )  # fmt: skip
    return Redeemed(
        redemption_id, coupon.id, credits, coupon.valid_until, before, granted.balance_after
    )


def _scalar(cur: psycopg.Cursor[Any]) -> Any:
    row = cur.fetchone()
    assert row is not None
    return row[0]


def _has_purchased(cur: psycopg.Cursor[Any], user_id: UUID) -> bool:
    cur.execute(
        """
        SELECT EXISTS (SELECT 1 FROM billing_invoice WHERE user_id = %(u)s AND status = 'paid')
            OR EXISTS (SELECT 1 FROM subscription_monetization
                       WHERE user_id = %(u)s AND base_price_usd > 0)
            OR EXISTS (SELECT 1 FROM perpetual_license WHERE user_id = %(u)s)
        """,
        {"u": user_id},
    )
    return bool(_scalar(cur))
