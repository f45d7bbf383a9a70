"""``codelift backtest``: compare an experiment's arms offline on masked held-out code."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from backtest.options import DEFAULT_PREFIX_CHARS, DEFAULT_SUFFIX_CHARS
from core.cli_support import CommandError
from experiments.analysis.options import DEFAULT_ALPHA, DEFAULT_RESAMPLES

if TYPE_CHECKING:
    from backtest.arms import Arm
    from backtest.corpus import CorpusFile
    from backtest.masking import Trigger

IN_PROCESS = "in-process"
HELD_OUT = "held-out"


def _names(value: str | None, option: str) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise CommandError(f"{option}: give comma-separated names")
    return names


def _triggers(value: str | None) -> tuple[Trigger, ...]:
    from backtest.masking import Trigger

    names = _names(value, "--triggers")
    if names is None:
        return tuple(Trigger)
    known = {t.value: t for t in Trigger}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise CommandError(f"--triggers: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(known[name] for name in names)


def _corpus(corpus: Path | None, languages: list[str] | None) -> list[CorpusFile]:
    from backtest.corpus import directory_corpus, held_out_corpus

    if corpus is None:
        return held_out_corpus(languages)
    try:
        return directory_corpus(corpus, languages)
    except NotADirectoryError as exc:
        raise CommandError(f"--corpus: {exc}") from None


@contextlib.contextmanager
def _gateway(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    from backtest.client import in_process_gateway
    from serving.gateway.config import get_settings

    typer.echo("starting a gateway in-process on the local engine", err=True)
    with in_process_gateway(get_settings()) as started:
        yield started


@contextlib.contextmanager
def _database() -> Iterator[str]:
    """The configured database; the embedded one migrated (it is this machine's own), a server
    required to be at the newest schema already."""
    from codelift.services import SchemaOutOfDate, prepared_database
    from core.settings import get_database_settings

    try:
        with prepared_database(get_database_settings()) as url:
            yield url
    except SchemaOutOfDate as exc:
        raise CommandError(exc) from None


def _progress(done: int, total: int) -> None:
    step = max(1, total // 10)
    if done % step == 0 or done == total:
        typer.echo(f"  {done}/{total} completions", err=True)


def backtest(
    experiment: Annotated[
        str,
        typer.Option(
            "--experiment", "-e", help="Experiment key in the registry, or a definition file."
        ),
    ],
    arms: Annotated[
        str | None,
        typer.Option(help="Comma-separated arms to compare, baseline first (default: all)."),
    ] = None,
    corpus: Annotated[
        Path | None,
        typer.Option(help="Directory of source files (default: the local model's held-out split)."),
    ] = None,
    languages: Annotated[
        str | None, typer.Option(help="Comma-separated languages (default: every one found).")
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="Masked spans per language.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the sampling, decoding and bootstrap.")] = 0,
    triggers: Annotated[
        str | None,
        typer.Option(help="Comma-separated: end_of_line, after_bracket, whole_line, block."),
    ] = None,
    gateway_url: Annotated[
        str | None,
        typer.Option(help="A running gateway (default: one started in-process, local engine)."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="CODELIFT_BACKTEST_API_KEY",
            help="Key with the serve and evaluate scopes, for --gateway-url.",
        ),
    ] = None,
    prefix_chars: Annotated[
        int, typer.Option(min=1, help="Characters before the cursor sent at most.")
    ] = DEFAULT_PREFIX_CHARS,
    suffix_chars: Annotated[
        int, typer.Option(min=0, help="Characters after the cursor sent at most.")
    ] = DEFAULT_SUFFIX_CHARS,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples.")] = (
        DEFAULT_RESAMPLES
    ),
    alpha: Annotated[
        float, typer.Option(min=0.001, max=0.5, help="1 − confidence level of the CIs.")
    ] = DEFAULT_ALPHA,
    output: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    store: Annotated[bool, typer.Option(help="Store the run in the database.")] = True,
) -> None:
    """Mask code in held-out files, let each arm restore it through the gateway, and compare
    the arms per language: exact match, chrF, edit similarity, latency, with bootstrap CIs."""
    from backtest.arms import ArmError, load_experiment, select_arms
    from backtest.client import GatewayClient, GatewayRefused
    from backtest.masking import sample_spans
    from backtest.report import RunInfo, as_json, render
    from backtest.runner import run_samples, summarize
    from backtest.store import save_backtest
    from core.db.session import session_for
    from experiments.definitions.config import ConfigError
    from experiments.definitions.registry import UnknownExperimentError

    if output not in ("table", "json"):
        raise CommandError(f"--format: use table or json, not {output!r}")
    arm_names = _names(arms, "--arms")
    language_names = _names(languages, "--languages")
    trigger_kinds = _triggers(triggers)
    with _database() as url:
        try:
            with session_for(url) as session:
                config = load_experiment(experiment, session)
            chosen: list[Arm] = select_arms(config, arm_names)
        except (ArmError, ConfigError, UnknownExperimentError) as exc:
            raise CommandError(exc) from None
        files = _corpus(corpus, language_names)
        spans = sample_spans(
            files,
            samples_per_language=samples,
            seed=seed,
            triggers=trigger_kinds,
            prefix_chars=prefix_chars,
            suffix_chars=suffix_chars,
        )
        if not spans:
            raise CommandError(
                "--corpus/--languages: no file to mask (no source file of the languages asked for)"
            )
        found = sorted({span.language for span in spans})
        typer.echo(
            f"{len(spans)} masked spans from {len(files)} files ({', '.join(found)}); "
            f"{len(chosen)} arms",
            err=True,
        )
        with _gateway(gateway_url) as base_url, GatewayClient(base_url, api_key=api_key) as client:
            try:
                results = run_samples(client, spans, chosen, seed=seed, progress=_progress)
            except GatewayRefused as exc:
                raise CommandError(f"the gateway refused the backtest: {exc}") from None
        names = [arm.name for arm in chosen]
        summary = summarize(results, names, seed=seed, resamples=resamples, alpha=alpha)
        corpus_name = str(corpus) if corpus is not None else HELD_OUT
        gateway_name = gateway_url or IN_PROCESS
        run_id = None
        if store:
            with session_for(url) as session:
                run = save_backtest(
                    session,
                    experiment_key=config.key,
                    arms=chosen,
                    corpus=corpus_name,
                    languages=found,
                    samples_per_language=samples,
                    seed=seed,
                    gateway=gateway_name,
                    parameters={
                        "triggers": [t.value for t in trigger_kinds],
                        "prefix_chars": prefix_chars,
                        "suffix_chars": suffix_chars,
                        "resamples": resamples,
                        "alpha": alpha,
                    },
                    results=results,
                    summary=summary,
                )
                session.commit()
                run_id = run.id
    info = RunInfo(
        run_id=run_id,
        experiment_key=config.key,
        arms=tuple(names),
        corpus=corpus_name,
        samples=len(spans),
        languages=tuple(found),
        seed=seed,
        gateway=gateway_name,
        alpha=alpha,
        resamples=resamples,
    )
    if output == "json":
        sys.stdout.write(json.dumps(as_json(info, summary), indent=2) + "\n")
    else:
        typer.echo(render(info, summary))
