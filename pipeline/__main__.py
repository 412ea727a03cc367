"""`python -m pipeline` is `usage-pipeline`."""

from pipeline.cli import main

main()
