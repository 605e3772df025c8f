"""The wire contract: CloudEvents envelopes and the pydantic models of their ``data``."""
