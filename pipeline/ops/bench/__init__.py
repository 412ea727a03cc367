"""`usage-pipeline bench`: the pipeline measured against the per-request baseline, the COPY
limit and a bare consumer, on one generated gateway stream, in a dedicated local stack.

Modules: `stream` (the pure event generator), `stats` (percentiles, medians, ratios,
targets), `stack` (the bench's own Kafka + PostgreSQL and its databases), `publish`
(fixed-rate and max-rate publishing with exact timestamps), `measure` (commit timestamps
and /proc probes), `consumers` (the baseline and bare consumer subprocesses), `runners`
(one side-by-side run, one rate sweep), `report` (table, JSON, Markdown) and `plot`.

`bench api`, the gateway API under load: `vegeta` (the load tool's targets, attacks and
results), `api_phases` (checks and ingest), `api_run` (the stack, the repeats, the books) and
`api_results` (figures, medians, targets, tables).
"""
