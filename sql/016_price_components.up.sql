-- Prices as vendors bill them (issue 14). The seed's four per-1k columns of
-- model_provider_pricing stay as they are; a price row's components add what they cannot
-- hold and the exact values they round:
--
--   component     input, output, cache_read, cache_write (five-minute writes),
--                 cache_write_1h, reasoning, audio_input, audio_output, image_input
--                 (USD per token), web_search (USD per query), request (USD per request)
--   service_tier  standard, batch, flex or priority: the tier whose requests it prices
--   above_tokens  0, or N: it prices requests whose prompt (input_tokens, cached and
--                 written tokens included) has more than N tokens
--
-- A component is part of its price row: it has the row's effective dates, and a price
-- change is a new row with all its components (pipeline.money.prices). Stored at the
-- catalog's full precision (unconstrained numeric); pipeline.core.tariff prices from them,
-- falling back to the seed columns where a row has no component.
CREATE TABLE model_price_components (
    pricing_id   uuid          NOT NULL REFERENCES model_provider_pricing (id) ON DELETE CASCADE,
    component    varchar(20)   NOT NULL CHECK (component IN (
        'input', 'output', 'cache_read', 'cache_write', 'cache_write_1h', 'reasoning',
        'audio_input', 'audio_output', 'image_input', 'web_search', 'request')),
    service_tier varchar(10)   NOT NULL DEFAULT 'standard'
        CHECK (service_tier IN ('standard', 'batch', 'flex', 'priority')),
    above_tokens integer       NOT NULL DEFAULT 0 CHECK (above_tokens >= 0),
    usd_per_unit numeric       NOT NULL CHECK (usd_per_unit >= 0 AND usd_per_unit < 1000),
    PRIMARY KEY (pricing_id, component, service_tier, above_tokens)
);

CREATE TRIGGER model_price_components_bump_reference_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON model_price_components
    FOR EACH STATEMENT EXECUTE FUNCTION bump_reference_version();

GRANT SELECT ON model_price_components TO pipeline_writer, finance_reader;

-- What a charge was made of, when the seed's four prices do not explain it: one line per
-- priced part ({"component", "service_tier", "above_tokens", "units", "usd_per_unit",
-- "usd"}), the lines' exact sum, and the tier and prompt size it was priced at. NULL
-- for a request priced at the standard tier's base input, output and cache prices only.
ALTER TABLE token_usage_ledger
    ADD COLUMN price_breakdown jsonb;
