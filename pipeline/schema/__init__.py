"""The schema: the migration runner over `sql/` and the reference data every environment
starts with."""
