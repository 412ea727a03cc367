DROP TABLE pricing_configs;
DROP TABLE model_provider_pricing;
DROP TABLE providers;
