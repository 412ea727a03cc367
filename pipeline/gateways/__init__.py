"""Gateways that bill through us without speaking our contract: their users linked to
ours, and LiteLLM's logging payloads mapped to contract events."""
