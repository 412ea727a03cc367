-- A counter that every change to the reference data the worker prices with (providers,
-- model_provider_pricing, pricing_configs) bumps, in the changing transaction. The worker
-- caches those rows across batches and reads this one row first in each batch
-- transaction, so a change committed before that read prices the very next batch.
CREATE TABLE reference_version (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version BIGINT NOT NULL DEFAULT 0
);
INSERT INTO reference_version DEFAULT VALUES;

-- SECURITY DEFINER: whoever may change prices bumps the counter without a grant on it.
CREATE FUNCTION bump_reference_version() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    UPDATE public.reference_version SET version = version + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER providers_bump_reference_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON providers
    FOR EACH STATEMENT EXECUTE FUNCTION bump_reference_version();
CREATE TRIGGER model_provider_pricing_bump_reference_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON model_provider_pricing
    FOR EACH STATEMENT EXECUTE FUNCTION bump_reference_version();
CREATE TRIGGER pricing_configs_bump_reference_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pricing_configs
    FOR EACH STATEMENT EXECUTE FUNCTION bump_reference_version();

GRANT SELECT ON reference_version TO pipeline_writer, finance_reader;
