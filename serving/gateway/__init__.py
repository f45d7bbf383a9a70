"""The OpenAI-compatible completion gateway."""
