"""Tables holding a user's rows: deleting the user (GDPR) must empty every one of them."""

USER_OWNED_TABLES = frozenset(
    {
        "subscription_monetization",
        "credit_allocation",
        "billing_invoice",
        "proration_event",
        "perpetual_license",
        "coupon_redemption",
        "user_credit_balance",
        "user_credit_source",
        "token_usage_ledger",
        "credit_deduction_ledger",
        "token_usage_daily_summary",
        "credit_usage_daily_summary",
    }
)
