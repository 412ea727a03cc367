"""LiteLLM as a price oracle: its own cost for a batch of chat requests, to check ours against.

`litellm_costs(requests)` -> {id: (cost or None, error or None)}; see tests/oracle/venv.py
for the venv it runs in and tests/oracle/litellm_oracle.py for the request fields and how
LiteLLM is called. The rules LiteLLM prices by: docs/litellm-pricing-rules.md.
"""

from tests.oracle.venv import litellm_cost_details, litellm_costs, oracle_python

__all__ = ["litellm_cost_details", "litellm_costs", "oracle_python"]
