DROP TRIGGER pricing_configs_bump_reference_version ON pricing_configs;
DROP TRIGGER model_provider_pricing_bump_reference_version ON model_provider_pricing;
DROP TRIGGER providers_bump_reference_version ON providers;
DROP FUNCTION bump_reference_version();
REVOKE ALL ON reference_version FROM pipeline_writer, finance_reader;
DROP TABLE reference_version;
