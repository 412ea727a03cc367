-- Grounding billed per prompt (issue 14): Google bills Gemini 2.x's Google Search
-- grounding once per request that searched, however many queries it ran, where Gemini 3.x
-- and the other vendors bill each query (web_search). A component, USD per request with
-- at least one web search.
ALTER TABLE model_price_components
    DROP CONSTRAINT model_price_components_component_check,
    ADD CONSTRAINT model_price_components_component_check CHECK (component IN (
        'input', 'output', 'cache_read', 'cache_write', 'cache_write_1h', 'reasoning',
        'audio_input', 'audio_output', 'image_input', 'web_search', 'web_search_prompt',
        'request'));
