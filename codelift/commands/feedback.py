"""``codelift feedback …``: tag, retrain, evaluate, discover themes, edit the codebook."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

# The same --actor option, database and failure style as the experiment registry's commands.
from core.cli_support import (
    Actor,
    CommandError,
    actor_name,
    command_app,
    configured_database_url,
    configured_session,
)
from feedback.errors import FeedbackInputError, UnknownThemeError
from feedback.options import DEFAULT_FOLDS, DEFAULT_RETRAIN_AFTER, LEANINGS, RETRAIN_FOLDS

if TYPE_CHECKING:
    from feedback.worker import TagRunResult

app = command_app("Feedback tagging: themes and polarity of comments.")
codebook_app = command_app("The codebook of themes.")
app.add_typer(codebook_app, name="codebook")


@app.command("tag")
def tag(
    loop: Annotated[bool, typer.Option(help="Keep tagging every --interval seconds.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between runs with --loop.")] = 60.0,
    retrain_after: Annotated[
        int, typer.Option(help="Retrain first once this many new corrections arrived.")
    ] = DEFAULT_RETRAIN_AFTER,
) -> None:
    """Tag pending comments (new ones, and those tagged by an older tagger or codebook)."""
    from feedback.worker import tag_all_pending, tag_periodically

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def echo(result: TagRunResult) -> None:
        retrained = " (retrained first)" if result.retrained else ""
        typer.echo(f"tagged {result.tagged} comments with tagger {result.tagger_id}{retrained}")

    with configured_database_url() as url:
        if not loop:
            echo(tag_all_pending(url, retrain_after=retrain_after))
            return
        tag_periodically(url, interval_s=interval, retrain_after=retrain_after, report=echo)


@app.command("retrain")
def retrain_command(
    folds: Annotated[int, typer.Option(help="Cross-validation folds for the recorded figures.")] = (
        RETRAIN_FOLDS
    ),
) -> None:
    """Train a new tagger version on the labelled set and people's corrections."""
    from feedback.worker import retrain

    with configured_session() as session:
        row = retrain(session, folds=folds)
        session.commit()
        typer.echo(f"tagger {row.id}: {row.n_examples} examples ({row.n_corrections} corrections)")
        for protocol, figures in row.metrics.items():
            assert isinstance(figures, dict)
            headline = {k: v for k, v in figures.items() if not isinstance(v, dict)}
            typer.echo(f"  {protocol}: {json.dumps(headline)}")


@app.command("evaluate")
def evaluate(
    folds: Annotated[int, typer.Option(help="Cross-validation folds.")] = DEFAULT_FOLDS,
    labelled: Annotated[
        Path | None, typer.Option(help="A JSON-lines labelled set (default: the shipped one).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Figures of the codebook-only and the learned tagger, on the untouched split and under
    group k-fold by source: top-1, top-1 = primary, polarity, macro-F1, per theme, confusions."""
    from feedback import codebook
    from feedback.dataset import load_labelled, resolve_themes
    from feedback.evaluation import evaluate_labelled, render
    from feedback.tagger import Tagger

    with configured_session() as session:
        themes = codebook.list_themes(session)
        merges = codebook.merged_into_map(session)
    try:
        labelled_set = load_labelled(labelled)
    except OSError as exc:
        raise CommandError(f"--labelled: {exc.strerror or exc}: {labelled}") from None
    except ValueError as exc:
        raise CommandError(exc) from None
    try:
        tagger = Tagger(themes)
        examples = resolve_themes(labelled_set, merges, tagger.theme_ids)
        reports = evaluate_labelled(tagger, examples, folds=folds)
    except ValueError as exc:
        raise CommandError(exc) from None
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        typer.echo(render(reports))


@app.command("discover")
def discover_command(
    min_size: Annotated[int, typer.Option(help="Smallest cluster worth a theme.")] = 3,
    max_themes: Annotated[int, typer.Option(help="Most proposals to show.")] = 5,
    accept: Annotated[
        int | None, typer.Option(help="Add proposal number N to the codebook.")
    ] = None,
    theme_id: Annotated[str | None, typer.Option(help="Id of the accepted theme.")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the accepted theme.")] = None,
    actor: Actor = None,
) -> None:
    """Propose new themes from comments tagged "other"; --accept N adds one."""
    from feedback.discovery import accept_proposal, discover

    with configured_session() as session:
        proposals = discover(session, min_size=min_size, max_themes=max_themes)
        if not proposals:
            typer.echo("no cluster of 'other' comments is large enough to propose a theme")
            return
        if accept is not None:
            if not 1 <= accept <= len(proposals):
                raise CommandError(FeedbackInputError("--accept", f"pick 1 to {len(proposals)}"))
            try:
                theme = accept_proposal(
                    session,
                    proposals[accept - 1],
                    actor=actor_name(actor),
                    theme_id=theme_id,
                    name=name,
                )
            except (FeedbackInputError, UnknownThemeError) as exc:
                raise CommandError(exc) from None
            session.commit()
            typer.echo(f"added theme {theme.id} ({theme.name}); comments are re-tagged next run")
            return
    for number, proposal in enumerate(proposals, start=1):
        typer.echo(
            f"{number}. {proposal.suggested_name} [{proposal.suggested_id}]: {proposal.size} "
            f"comments, cohesion {proposal.cohesion:.2f}; "
            f"key terms: {', '.join(proposal.key_terms)}"
        )
        for text in proposal.representatives:
            typer.echo(f"     - {text}")


@app.command("shares")
def shares(
    by: Annotated[str, typer.Option(help="'arm' (needs --experiment) or 'language'.")] = "language",
    experiment: Annotated[str | None, typer.Option(help="Experiment key.")] = None,
) -> None:
    """Theme and polarity shares per arm or language, with 95% CIs (users as the unit)."""
    if by not in ("arm", "language"):
        raise CommandError(FeedbackInputError("--by", "must be 'arm' or 'language'"))
    from feedback.analysis import theme_shares

    with configured_session() as session:
        try:
            if by == "arm":
                rows = theme_shares(session, by="arm", experiment_key=experiment)
            else:
                rows = theme_shares(session, by="language", experiment_key=experiment)
        except FeedbackInputError as exc:
            raise CommandError(exc) from None
    for row in rows:
        if row.share is None:
            continue
        ci = f"[{row.ci_low:.3f}, {row.ci_high:.3f}]" if row.ci_low is not None else row.code.value
        typer.echo(
            f"{row.group:<16} {row.theme_id:<22} {row.share:6.3f} {ci:<20} "
            f"{row.with_theme}/{row.comments} comments, {row.users} users"
        )


@codebook_app.command("list")
def codebook_list(
    all_themes: Annotated[bool, typer.Option("--all", help="Include merged themes.")] = False,
) -> None:
    """List the codebook's themes."""
    from feedback import codebook

    with configured_session() as session:
        for theme in codebook.list_themes(session, include_inactive=all_themes):
            state = f" (merged into {theme.merged_into})" if theme.merged_into else ""
            typer.echo(
                f"{theme.id:<22} {theme.name:<36} {theme.polarity_leaning:<8}{state}  "
                f"{theme.description}"
            )


@codebook_app.command("add")
def codebook_add(
    theme_id: Annotated[str, typer.Argument(help="Lower-case id, e.g. pricing.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    description: Annotated[str, typer.Option(help="What the theme covers.")],
    example: Annotated[
        list[str] | None, typer.Option("--example", help="An example phrase; repeatable.")
    ] = None,
    leaning: Annotated[str, typer.Option(help=f"One of {', '.join(LEANINGS)}.")] = "neutral",
    actor: Actor = None,
) -> None:
    """Add a theme."""
    from feedback import codebook

    with configured_session() as session:
        try:
            theme = codebook.add_theme(
                session,
                theme_id=theme_id,
                name=name,
                description=description,
                examples=example or [],
                polarity_leaning=leaning,
                actor=actor_name(actor),
            )
        except FeedbackInputError as exc:
            raise CommandError(exc) from None
        session.commit()
        typer.echo(f"added {theme.id} ({theme.name})")


@codebook_app.command("rename")
def codebook_rename(
    theme_id: Annotated[str, typer.Argument(help="The theme's id.")],
    name: Annotated[str, typer.Argument(help="The new name.")],
    actor: Actor = None,
) -> None:
    """Rename a theme (its id, tags and corrections stay)."""
    from feedback import codebook

    with configured_session() as session:
        try:
            theme = codebook.rename_theme(
                session, theme_id=theme_id, name=name, actor=actor_name(actor)
            )
        except (FeedbackInputError, UnknownThemeError) as exc:
            raise CommandError(exc) from None
        session.commit()
        typer.echo(f"renamed {theme.id} to {theme.name}")


@codebook_app.command("merge")
def codebook_merge(
    source_id: Annotated[str, typer.Argument(help="The theme that goes away.")],
    target_id: Annotated[str, typer.Argument(help="The theme that absorbs it.")],
    actor: Actor = None,
) -> None:
    """Merge one theme into another; tags move, the source is kept as merged."""
    from feedback import codebook

    with configured_session() as session:
        try:
            theme = codebook.merge_themes(
                session, source_id=source_id, target_id=target_id, actor=actor_name(actor)
            )
        except (FeedbackInputError, UnknownThemeError) as exc:
            raise CommandError(exc) from None
        session.commit()
        typer.echo(f"merged {source_id} into {theme.id}")
