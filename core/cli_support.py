"""Pieces every `codelift` sub-command group shares: who acts, and how a command fails."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

Actor = Annotated[
    str | None, typer.Option("--actor", help="Who makes the change (default: the OS user).")
]


def actor_name(actor: str | None) -> str:
    """The actor recorded in audit logs: the one given, else the OS user."""
    return actor or f"cli:{getpass.getuser()}"


def fail(exc: Exception) -> typer.Exit:
    """Print ``exc`` as an error and return the exit (code 2) for the caller to raise."""
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=2)
