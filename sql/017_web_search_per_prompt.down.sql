DELETE FROM model_price_components WHERE component = 'web_search_prompt';

ALTER TABLE model_price_components
    DROP CONSTRAINT model_price_components_component_check,
    ADD CONSTRAINT model_price_components_component_check CHECK (component IN (
        'input', 'output', 'cache_read', 'cache_write', 'cache_write_1h', 'reasoning',
        'audio_input', 'audio_output', 'image_input', 'web_search', 'request'));
