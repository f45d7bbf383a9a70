"""The shared core: settings, database access, API keys, HTTP service helpers and the failure
style of commands. Imports no feature package; every package may import it."""
