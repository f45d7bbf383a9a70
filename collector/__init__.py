"""Telemetry collector: the FastAPI service that stores IDE events in PostgreSQL."""
