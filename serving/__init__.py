"""Serving tier: the OpenAI-compatible gateway and its inference backends."""
