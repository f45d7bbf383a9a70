"""API keys: stored hashed, scoped, verified by the collector and the gateway."""
