"""Pieces every `codelift` sub-command group shares: who acts, the database a command works on,
and how a command fails.

A command fails by raising :class:`CommandError`: the group (:class:`CommandGroup`, which every
``codelift`` Typer app is made with) prints ``error: <message>`` on stderr, one line, no
traceback, and exits with the error's code: 2 for a user error (a bad argument, an unknown
experiment, a file that does not parse), 1 for a failure that is not the user's doing (a
service that did not start). Typer's own usage errors (a missing option, a value an option's
type rejects) stay typer's.

This module is imported when the command line starts, so ``codelift --help`` stays fast: the
database pieces are imported by the helpers when a command calls them, not here.
"""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic_core import ValidationError
from typer.core import TyperGroup

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.settings import DatabaseSettings

USAGE_EXIT = 2
FAILURE_EXIT = 1

Actor = Annotated[
    str | None, typer.Option("--actor", help="Who makes the change (default: the OS user).")
]


def actor_name(actor: str | None) -> str:
    """The actor recorded in audit logs: the one given, else the OS user."""
    return actor or f"cli:{getpass.getuser()}"


class CommandError(Exception):
    """A command cannot do what it was asked; ``message`` says why, in the user's terms.

    ``message`` may be an exception (a domain error such as an unknown experiment): its text is
    the message. ``code`` is the exit status: 2 (the default) for a user error, 1 otherwise.
    """

    def __init__(self, message: object, *, code: int = USAGE_EXIT) -> None:
        super().__init__(str(message))
        self.code = code


class CommandGroup(TyperGroup):
    """A Typer group whose commands fail by raising :class:`CommandError`."""

    # ``ctx`` is typer's own (vendored) click context; typed loosely to stay off its internals.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CommandError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=exc.code) from None
        except ValidationError as exc:
            # Settings refused (a default secret outside development, a bad value): the
            # reasons name the settings, and are all the user needs; the stack is not theirs.
            if not exc.title.endswith("Settings"):
                raise
            typer.echo(f"error: {settings_problem(exc)}", err=True)
            raise typer.Exit(code=USAGE_EXIT) from None


def settings_problem(exc: ValidationError) -> str:
    """One line saying which settings were refused and why (never their values)."""
    reasons = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        reasons.append(f"{where}: {message}" if where else message)
    return f"{exc.title} refused: " + "; ".join(reasons)


def command_app(help: str) -> typer.Typer:
    """A ``codelift`` command group: ``--help`` when called bare, failures as ``error: …``."""
    return typer.Typer(cls=CommandGroup, no_args_is_help=True, help=help)


@contextlib.contextmanager
def configured_database_url(settings: DatabaseSettings | None = None) -> Iterator[str]:
    """The URL of the configured database (``settings``, default: the environment's).

    With no database URL configured that is the embedded PostgreSQL, running for as long as the
    block does. Nothing is migrated: a command that needs the schema upgrades it itself.
    """
    from core.db.embedded import database_url
    from core.settings import get_database_settings

    with database_url(settings if settings is not None else get_database_settings()) as url:
        yield url


@contextlib.contextmanager
def configured_session(settings: DatabaseSettings | None = None) -> Iterator[Session]:
    """A session on the configured database (see :func:`configured_database_url`).

    Its engine is disposed at the end, so no connection outlives the command; the command
    commits what it changes.
    """
    from core.db.session import session_for

    with configured_database_url(settings) as url, session_for(url) as session:
        yield session
