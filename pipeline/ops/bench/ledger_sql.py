"""The SQL of `ledger_fill`: set up, one chunk (in the order it runs), finish.

Parameters: salt (ids are md5 of it and a row's position: unique, and cheaper than
gen_random_uuid), first (the chunk's first position), count, users, now, since, models,
usd_per_credit, and, set by the caller once
the step that yields them has run, model_count (after ``models``) and base_seq (after
``base_seq``). The temporary table ``bench_users`` must exist. A chunk's tables are dropped
at its end; the day increments (``bench_user_days``, ``bench_model_days``) add up over the
chunks and are upserted into the summaries once, at the end, so a summary row is written
once per fill, not once per chunk.
"""

from __future__ import annotations

from pipeline.books.transaction import (
    CREDIT_SUMMARY_MERGE,
    MODEL_SUMMARY_MERGE,
    TOKEN_SUMMARY_MERGE,
)

# Deduction rows carry an explicit seq (the chain order) instead of the identity's next
# value, so no concurrent writer may take values meanwhile; readers are not blocked.
_LOCK_LEDGER = "LOCK TABLE credit_deduction_ledger IN EXCLUSIVE MODE"

_LOCK_BALANCES = """
SELECT count(*) FROM (
    SELECT FROM user_credit_balance WHERE user_id IN (SELECT id FROM bench_users)
    ORDER BY user_id FOR UPDATE
) locked
"""

_MODELS = """
CREATE TEMP TABLE bench_models ON COMMIT DROP AS
SELECT (row_number() OVER (ORDER BY p.model_name, p.provider_id) - 1)::int AS k,
       p.provider_id, p.model_name, p.input_price_per_1k AS in_price,
       p.output_price_per_1k AS out_price,
       coalesce(p.cache_hit_price_per_1k, p.input_price_per_1k) AS hit_price,
       coalesce(p.cache_input_price_per_1k, p.input_price_per_1k) AS write_price,
       p.cache_input_price_per_1k IS NOT NULL AS writes_cache
FROM model_provider_pricing p
WHERE p.is_active AND p.model_name = ANY(%(models)s) AND p.effective_from <= %(since)s
  AND (p.effective_until IS NULL OR p.effective_until > %(now)s)
"""

_ACCOUNTS = """
CREATE TEMP TABLE bench_accounts ON COMMIT DROP AS
SELECT b.u, b.id AS user_id, s.id AS subscription_id, s.tier::text AS tier, m.margin_multiplier,
       60 + (b.u * 7919) %% 31 AS days
FROM bench_users b
JOIN LATERAL (
    SELECT id, tier FROM subscription_monetization
    WHERE user_id = b.id AND status = 'active' ORDER BY current_period_end DESC LIMIT 1
) s ON true
JOIN LATERAL (
    SELECT margin_multiplier FROM pricing_configs
    WHERE scope_type = 'tier' AND subscription_tier = s.tier AND approval_status = 'approved'
      AND is_active AND effective_from <= %(since)s
      AND (effective_until IS NULL OR effective_until > %(now)s)
    ORDER BY effective_from DESC LIMIT 1
) m ON true
"""

# Users by u = floor(users * r^3): heavy-tailed. Models skewed towards the first ones.
_USAGE = """
CREATE TEMP TABLE bench_usage ON COMMIT DROP AS
WITH draws AS (
    SELECT g AS n, floor(%(users)s * random() ^ 3)::int AS u, random() AS r_time,
           random() AS r_model, random() AS r_in, random() AS r_out, random() AS r_cache,
           random() AS r_status, random() AS r_latency
    FROM generate_series(%(first)s::bigint, %(first)s::bigint + %(count)s - 1) g
), shaped AS (
    SELECT d.n, a.user_id, a.subscription_id, a.tier, a.margin_multiplier, m.provider_id,
           m.model_name, m.in_price, m.out_price, m.hit_price, m.write_price, m.writes_cache,
           %(now)s - d.r_time * a.days * interval '1 day' AS started_at,
           (150 + floor(30000 * d.r_latency ^ 2))::int AS processing_time_ms,
           (100 + floor(12000 * d.r_in ^ 3))::int AS input_tokens,
           (10 + floor(2000 * d.r_out ^ 2))::int AS output_tokens,
           d.r_cache, d.r_status
    FROM draws d
    JOIN bench_accounts a ON a.u = d.u
    JOIN bench_models m ON m.k = floor(%(model_count)s * d.r_model ^ 2)::int
), tokens AS MATERIALIZED (
    SELECT s.*,
           CASE WHEN r_cache < 0.4 THEN floor(input_tokens * r_cache)::int ELSE 0 END
               AS cached_input_tokens,
           CASE WHEN writes_cache AND r_cache >= 0.9 THEN input_tokens / 10 ELSE 0 END
               AS cache_write_tokens
    FROM shaped s
), priced AS MATERIALIZED (
    SELECT t.*,
           round(((input_tokens - cached_input_tokens - cache_write_tokens) * in_price
                  + cached_input_tokens * hit_price + cache_write_tokens * write_price
                  + output_tokens * out_price) / 1000, 8) AS vendor_cost
    FROM tokens t
), charged AS MATERIALIZED (
    SELECT p.*,
           CASE WHEN vendor_cost > 0
                THEN ceil(vendor_cost * margin_multiplier / %(usd_per_credit)s)::int
                ELSE 0 END AS credits
    FROM priced p
)
SELECT c.n, md5(%(salt)s || ':request:' || c.n)::uuid AS request_id,
       md5(%(salt)s || ':usage:' || c.n)::uuid AS usage_id,
       CASE WHEN c.credits > 0 THEN md5(%(salt)s || ':deduction:' || c.n)::uuid END
           AS deduction_id,
       c.user_id, c.subscription_id, c.tier, c.margin_multiplier, c.provider_id, c.model_name,
       c.input_tokens, c.output_tokens, c.cached_input_tokens, c.cache_write_tokens,
       c.vendor_cost, c.credits, c.credits * %(usd_per_credit)s::numeric AS credit_value_usd,
       c.started_at, c.started_at + c.processing_time_ms * interval '1 millisecond'
           AS completed_at,
       c.processing_time_ms,
       CASE WHEN c.r_status < 0.01 THEN 'error' ELSE 'success' END AS status,
       CASE WHEN c.r_status < 0.01 THEN 'upstream timeout' END AS error_message,
       (ARRAY['us-east-1', 'eu-west-1', 'ap-southeast-1'])[1 + c.n %% 3] AS region,
       CASE WHEN c.r_status >= 0.5 THEN 1 + c.n %% 40 END AS streaming_segments,
       (c.started_at AT TIME ZONE 'UTC')::date AS day
FROM charged c
"""

# Per user: a grant of what the chunk spends plus headroom, before the chunk's usage.
_GRANTS = """
CREATE TEMP TABLE bench_grants ON COMMIT DROP AS
SELECT s.user_id, a.subscription_id, b.amount AS balance_before, s.spend,
       (1000 + floor(49000 * random()))::int AS headroom, s.granted_at,
       last.completed_at AS last_deduction_at, last.credits AS last_deduction_amount
FROM (
    SELECT user_id, sum(credits)::int AS spend, min(started_at) - interval '1 hour' AS granted_at
    FROM bench_usage GROUP BY user_id
) s
JOIN bench_accounts a ON a.user_id = s.user_id
JOIN user_credit_balance b ON b.user_id = s.user_id
LEFT JOIN (
    SELECT DISTINCT ON (user_id) user_id, credits, completed_at FROM bench_usage
    WHERE credits > 0 ORDER BY user_id, started_at DESC, n DESC
) last ON last.user_id = s.user_id
"""

_BASE_SEQ = """
SELECT coalesce(pg_sequence_last_value(
    pg_get_serial_sequence('credit_deduction_ledger', 'seq')::regclass), 0)
"""

# Chained per user (grant first, then usage in time order) with global seq numbers. Both
# windows share one sort.
_DEDUCTIONS = """
INSERT INTO credit_deduction_ledger (
    id, seq, user_id, amount, balance_before, balance_after, request_id, token_vendor_cost,
    margin_multiplier, gross_margin, reason, status, processed_at, created_at)
OVERRIDING SYSTEM VALUE
SELECT id, seq, user_id, amount, after - amount, after, request_id, cost, margin, gross, reason,
       'completed', booked_at, booked_at
FROM (
    SELECT c.*,
           %(base_seq)s::bigint + row_number() OVER (ORDER BY user_id, step, ord, n) AS seq,
           start + sum(amount) OVER (PARTITION BY user_id ORDER BY step, ord, n
                                     ROWS UNBOUNDED PRECEDING) AS after
    FROM (
        SELECT md5(%(salt)s || ':grant:' || %(first)s || ':' || user_id)::uuid AS id, user_id,
               0 AS step, granted_at AS ord, 0::bigint AS n,
               granted_at AS booked_at, spend + headroom AS amount, balance_before AS start,
               NULL::uuid AS request_id, NULL::numeric AS cost, NULL::numeric AS margin,
               NULL::numeric AS gross, 'grant_subscription' AS reason
        FROM bench_grants
        UNION ALL
        SELECT u.deduction_id, u.user_id, 1, u.started_at, u.n, u.completed_at, -u.credits,
               g.balance_before, u.request_id, u.vendor_cost, u.margin_multiplier,
               u.credit_value_usd - u.vendor_cost, 'api_completion'
        FROM bench_usage u JOIN bench_grants g ON g.user_id = u.user_id
        WHERE u.credits > 0
    ) c
) chained
ORDER BY booked_at
"""

_SET_SEQ = """
SELECT setval(pg_get_serial_sequence('credit_deduction_ledger', 'seq'),
              %(base_seq)s::bigint + (SELECT count(*) FROM bench_grants)
              + (SELECT count(*) FROM bench_usage WHERE credits > 0))
"""

_USAGE_LEDGER = """
INSERT INTO token_usage_ledger (
    id, request_id, user_id, subscription_id, model_id, provider_id, input_tokens, output_tokens,
    cached_input_tokens, cache_write_tokens, vendor_cost, margin_multiplier, credit_value_usd,
    credits_deducted, request_type, streaming_segments, request_started_at,
    request_completed_at, processing_time_ms, status, error_message, is_streaming_complete,
    user_tier_at_request, region, deduction_record_id, event_fingerprint, created_at)
SELECT usage_id, request_id, user_id, subscription_id, model_name, provider_id, input_tokens,
       output_tokens, cached_input_tokens, cache_write_tokens, vendor_cost, margin_multiplier,
       credit_value_usd, credits, 'completion', streaming_segments, started_at, completed_at,
       processing_time_ms, status, error_message, true, tier, region, deduction_id,
       sha256(uuid_send(request_id)), completed_at
FROM bench_usage
ORDER BY completed_at
"""

_BALANCES = """
UPDATE user_credit_balance b
SET amount = g.balance_before + g.headroom, last_deduction_at = g.last_deduction_at,
    last_deduction_amount = g.last_deduction_amount, updated_at = %(now)s
FROM bench_grants g WHERE b.user_id = g.user_id
"""

_SOURCES = """
INSERT INTO user_credit_source (user_id, source, amount, expires_at, created_at)
SELECT user_id, 'subscription', headroom, NULL, granted_at FROM bench_grants
"""

_ALLOCATIONS = """
INSERT INTO credit_allocation (
    user_id, subscription_id, amount, source, allocation_period_start, allocation_period_end,
    applied_to_balance_at, credit_type, created_at)
SELECT user_id, subscription_id, spend + headroom, 'subscription', granted_at, 'infinity',
       granted_at, 'subscription', granted_at
FROM bench_grants
"""

_DAY_TABLES = """
CREATE TEMP TABLE bench_user_days (
    user_id uuid, day date, requests bigint, ok bigint, input bigint, output bigint,
    latency bigint, cost numeric, credits bigint, margin numeric,
    charged bigint, charged_cost numeric, charged_margin numeric
) ON COMMIT DROP;
CREATE TEMP TABLE bench_model_days (
    day date, provider_id uuid, model_id text, requests bigint, input bigint, output bigint,
    cached bigint, writes bigint, cost numeric, credits bigint, value numeric
) ON COMMIT DROP
"""

# Both user/day summaries in one pass; the credit one counts only requests with a deduction.
_USER_DAYS = """
INSERT INTO bench_user_days
SELECT user_id, day, count(*), count(*) FILTER (WHERE status = 'success'), sum(input_tokens),
       sum(output_tokens), sum(processing_time_ms), sum(vendor_cost), sum(credits),
       sum(credit_value_usd - vendor_cost), count(*) FILTER (WHERE credits > 0),
       sum(vendor_cost) FILTER (WHERE credits > 0),
       sum(credit_value_usd - vendor_cost) FILTER (WHERE credits > 0)
FROM bench_usage GROUP BY user_id, day
"""

_MODEL_DAYS = """
INSERT INTO bench_model_days
SELECT day, provider_id, model_name, count(*), sum(input_tokens), sum(output_tokens),
       sum(cached_input_tokens), sum(cache_write_tokens), sum(vendor_cost), sum(credits),
       sum(credit_value_usd)
FROM bench_usage GROUP BY day, provider_id, model_name
"""

_DROP_CHUNK = "DROP TABLE bench_models, bench_accounts, bench_usage, bench_grants"

_TOKEN_SUMMARY = (
    """
INSERT INTO token_usage_daily_summary AS t (
    id, user_id, summary_date, total_requests, successful_requests, total_input_tokens,
    total_output_tokens, total_processing_time_ms, total_vendor_cost, total_credits_deducted,
    total_gross_margin, avg_request_latency_ms, success_rate, created_at)
SELECT md5(%(salt)s || ':token-day:' || v.user_id || v.day)::uuid, v.*,
       round(v.latency::numeric / v.requests), round(100.0 * v.ok / v.requests, 2), %(now)s
FROM (
    SELECT user_id, day, sum(requests)::int, sum(ok)::int, sum(input)::int, sum(output)::int,
           sum(latency)::bigint, sum(cost), sum(credits)::int, sum(margin)
    FROM bench_user_days GROUP BY user_id, day
) v (user_id, day, requests, ok, input, output, latency, cost, credits, margin)
ORDER BY v.user_id, v.day
"""
    + TOKEN_SUMMARY_MERGE
)

_CREDIT_SUMMARY = (
    """
INSERT INTO credit_usage_daily_summary AS t (
    id, user_id, summary_date, total_deductions, total_requests, total_vendor_cost,
    total_gross_margin, created_at)
SELECT md5(%(salt)s || ':credit-day:' || user_id || day)::uuid, user_id, day,
       sum(credits)::int, sum(charged)::int, sum(charged_cost), sum(charged_margin), %(now)s
FROM bench_user_days WHERE charged > 0 GROUP BY user_id, day
ORDER BY user_id, day
"""
    + CREDIT_SUMMARY_MERGE
)

_MODEL_SUMMARY = (
    """
INSERT INTO model_usage_daily_summary AS t (
    summary_date, provider_id, model_id, total_requests, total_input_tokens,
    total_output_tokens, total_cached_input_tokens, total_cache_write_tokens,
    total_vendor_cost, total_credits_deducted, total_credit_value_usd, updated_at)
SELECT day, provider_id, model_id, sum(requests), sum(input), sum(output), sum(cached),
       sum(writes), sum(cost), sum(credits), sum(value), %(now)s
FROM bench_model_days GROUP BY day, provider_id, model_id
"""
    + MODEL_SUMMARY_MERGE
)

SETUP_STATEMENTS: tuple[str, ...] = (_LOCK_LEDGER, _LOCK_BALANCES, _DAY_TABLES)

CHUNK_STATEMENTS: tuple[tuple[str, str], ...] = (
    ("models", _MODELS),
    ("accounts", _ACCOUNTS),
    ("analyze", "ANALYZE bench_models, bench_accounts"),
    ("usage", _USAGE),
    ("grants", _GRANTS),
    ("base_seq", _BASE_SEQ),
    ("deductions", _DEDUCTIONS),
    ("set_seq", _SET_SEQ),
    ("usage_ledger", _USAGE_LEDGER),
    ("balances", _BALANCES),
    ("sources", _SOURCES),
    ("allocations", _ALLOCATIONS),
    ("user_days", _USER_DAYS),
    ("model_days", _MODEL_DAYS),
    ("drop", _DROP_CHUNK),
)
"""(step name, statement): the caller reads the results of ``models``, ``accounts`` and
``base_seq``."""

FINISH_STATEMENTS: tuple[str, ...] = (_TOKEN_SUMMARY, _CREDIT_SUMMARY, _MODEL_SUMMARY)
