-- Plan 112: provider registry, effective-dated vendor prices, margin multipliers.

CREATE TABLE providers (
    id         uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
    name       varchar(100) NOT NULL UNIQUE,
    api_type   varchar(50)  NOT NULL,
    is_enabled boolean      NOT NULL DEFAULT true,
    created_at timestamptz  NOT NULL DEFAULT now(),
    updated_at timestamptz  NOT NULL DEFAULT now()
);

CREATE INDEX providers_is_enabled_idx ON providers (is_enabled);

-- Vendor prices per 1,000 tokens. A price change is a new row with a later effective_from;
-- a request is priced by the row in effect when it started.
CREATE TABLE model_provider_pricing (
    id                          uuid           PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id                 uuid           NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    model_name                  varchar(255)   NOT NULL,
    vendor_model_id             varchar(255),
    input_price_per_1k          numeric(10, 8) NOT NULL,
    output_price_per_1k         numeric(10, 8) NOT NULL,
    cache_input_price_per_1k    numeric(10, 8),
    cache_hit_price_per_1k      numeric(10, 8),
    effective_from              timestamptz    NOT NULL,
    effective_until             timestamptz,
    previous_price_input        numeric(10, 8),
    previous_price_output       numeric(10, 8),
    price_change_percent_input  numeric(5, 2),
    price_change_percent_output numeric(5, 2),
    detected_at                 timestamptz,
    is_active                   boolean        NOT NULL DEFAULT true,
    description                 text,
    last_verified               timestamptz    NOT NULL DEFAULT now(),
    verification_frequency_days integer        NOT NULL DEFAULT 7,
    created_at                  timestamptz    NOT NULL DEFAULT now(),
    updated_at                  timestamptz    NOT NULL DEFAULT now(),
    UNIQUE (provider_id, model_name, effective_from),
    -- The seed makes vendor_model_id unique on its own, which forbids a second price row
    -- (a price change) for the same vendor model and the same vendor model id at two
    -- providers (OpenAI and Azure OpenAI). Unique per provider and effective date instead.
    UNIQUE (provider_id, vendor_model_id, effective_from)
);

CREATE INDEX model_provider_pricing_provider_id_model_name_is_active_idx
    ON model_provider_pricing (provider_id, model_name, is_active);
CREATE INDEX model_provider_pricing_effective_from_effective_until_idx
    ON model_provider_pricing (effective_from, effective_until);
CREATE INDEX model_provider_pricing_is_active_idx ON model_provider_pricing (is_active);

-- Margin multipliers, scoped to a tier, provider, model or combination, with approval.
CREATE TABLE pricing_configs (
    id                             uuid              PRIMARY KEY DEFAULT gen_random_uuid(),
    scope_type                     varchar(20)       NOT NULL,
    subscription_tier              subscription_tier,
    provider_id                    uuid              REFERENCES providers (id) ON DELETE CASCADE,
    model_id                       varchar(255),
    margin_multiplier              numeric(4, 2)     NOT NULL,
    target_gross_margin_percent    numeric(5, 2),
    effective_from                 timestamptz       NOT NULL,
    effective_until                timestamptz,
    reason                         varchar(50)       NOT NULL,
    reason_details                 text,
    previous_multiplier            numeric(4, 2),
    change_percent                 numeric(5, 2),
    expected_margin_change_dollars numeric(12, 2),
    expected_revenue_impact        numeric(12, 2),
    -- RESTRICT: an admin who authored pricing is reassigned before being deleted.
    created_by                     uuid              NOT NULL
        REFERENCES users (id) ON DELETE RESTRICT,
    approved_by                    uuid              REFERENCES users (id) ON DELETE SET NULL,
    requires_approval              boolean           NOT NULL DEFAULT true,
    approval_status                varchar(20)       NOT NULL DEFAULT 'pending',
    is_active                      boolean           NOT NULL DEFAULT true,
    monitored                      boolean           NOT NULL DEFAULT true,
    created_at                     timestamptz       NOT NULL DEFAULT now(),
    updated_at                     timestamptz       NOT NULL DEFAULT now()
);

CREATE INDEX pricing_configs_scope_type_idx ON pricing_configs (scope_type);
CREATE INDEX pricing_configs_subscription_tier_is_active_idx
    ON pricing_configs (subscription_tier, is_active);
CREATE INDEX pricing_configs_provider_id_is_active_idx ON pricing_configs (provider_id, is_active);
CREATE INDEX pricing_configs_is_active_effective_from_idx
    ON pricing_configs (is_active, effective_from);
CREATE INDEX pricing_configs_approval_status_idx ON pricing_configs (approval_status);

-- Not in the seed: two approved, active configs for the same scope starting at the same
-- moment would make the multiplier ambiguous. Pending or rejected proposals may repeat.
-- Also the natural key the seed data is inserted by.
CREATE UNIQUE INDEX pricing_configs_approved_scope_key
    ON pricing_configs (scope_type, subscription_tier, provider_id, model_id, effective_from)
    NULLS NOT DISTINCT
    WHERE approval_status = 'approved' AND is_active;
