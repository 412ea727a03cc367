"""The gateway API (`usage-pipeline api`): HTTP ingest and the pre-request balance check."""
