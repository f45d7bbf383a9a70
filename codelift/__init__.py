"""Shared core of CodeLift: settings, database, API keys and the command line."""
