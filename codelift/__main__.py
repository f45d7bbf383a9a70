"""``python -m codelift`` is the ``codelift`` command."""

from codelift.cli import app

app(prog_name="codelift")
