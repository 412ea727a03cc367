"""Operator tools, apart from the product: the local stack, the benchmarks, the chaos drill
and the demo."""
