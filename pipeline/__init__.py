"""Usage-and-credit pipeline: usage events in, exact money out."""
