"""Feedback tagging benchmark: tag 1,000 comments, alone and through the worker with its writes.

Run from the repository root: ``python -m bench.feedback_tagging [--comments 1000] [--threads 2]``.
It

1. loads the sentence model (timed: once per process);
2. makes 1,000 distinct comments (the labelled set's texts, real comments first, with varied
   openings and endings);
3. times ``Tagger.tag`` on them (embedding and classifiers, nothing cached), codebook only and
   then with the trained model;
4. in a scratch database, trains a tagger version (timed apart), stores the comments as
   feedback rows and times ``tag_pending``: reading, tagging and writing tags, batch commits.

Wall and CPU seconds are printed and written to ``bench/results/feedback_tagging.json``. On a
shared machine wall time counts the neighbours too; CPU seconds / threads bounds what an idle
machine with that many cores would take.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import insert

from bench.ingest import scratch_database
from collector.models import FeedbackRow
from core.db.session import session_for
from feedback.codebook import list_themes
from feedback.dataset import load_labelled
from feedback.embedder import get_embedder
from feedback.features import CommentInput
from feedback.model import TaggerModel
from feedback.tagger import Tagger
from feedback.worker import latest_tagger, retrain, tag_pending

RESULTS = Path(__file__).parent / "results" / "feedback_tagging.json"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
OPENINGS = ("", "Honestly, ", "After a week: ", "Update - ", "FWIW ", "From the Go team: ")
ENDINGS = ("", " Thanks.", " (using VS Code)", " Just my two cents.", "!", " Cheers")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Timer:
    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = cpu_seconds() - self.cpu

    def figures(self) -> dict[str, float]:
        return {"wall_s": round(self.wall, 3), "cpu_s": round(self.cpu, 3)}


def comments(n: int) -> list[CommentInput]:
    """``n`` distinct comments built from the labelled set."""
    labelled = load_labelled()
    out: list[CommentInput] = []
    for i in range(n):
        example = labelled[i % len(labelled)]
        variant = i // len(labelled)
        opening = OPENINGS[variant % len(OPENINGS)]
        ending = ENDINGS[(variant // len(OPENINGS)) % len(ENDINGS)]
        text = f"{opening}{example.comment.text}{ending}"
        out.append(CommentInput(text, example.comment.rating, example.comment.rating_scale))
    if len({c.text for c in out}) != n:
        raise SystemExit(f"could not make {n} distinct comments")
    return out


def feedback_rows(batch: list[CommentInput]) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC)
    return [
        {
            "event_id": uuid.uuid4(),
            "client_ts": now,
            "received_at": now,
            "schema_version": 1,
            "user_id": f"user-{i % 200:04d}",
            "session_id": "bench",
            "ide": "vscode",
            "plugin_version": "1.0.0",
            "language": "python",
            "feedback_id": uuid.uuid4(),
            "rating_scale": c.rating_scale,
            "rating": c.rating,
            "text": c.text,
            "target": "product",
            "suggestion_id": None,
        }
        for i, c in enumerate(batch)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comments", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    server = os.environ.get("CODELIFT_DATABASE_URL", DEFAULT_SERVER)
    batch = comments(args.comments)
    load_before = os.getloadavg()[0]

    with Timer() as load:
        embedder = get_embedder()
    print(f"model load: {load.wall:.2f} s wall, {load.cpu:.2f} s CPU")

    with scratch_database(server) as url, session_for(url) as session:
        themes = list_themes(session)
        tagger = Tagger(themes, embedder=embedder)
        embedder.clear_cache()
        with Timer() as alone:
            tagger.tag(batch)
        print(
            f"Tagger.tag, {args.comments} comments (codebook only): "
            f"{alone.wall:.2f} s wall, {alone.cpu:.2f} s CPU"
        )

        with Timer() as training:
            retrain(session)
            session.commit()
        row = latest_tagger(session)
        assert row is not None
        print(
            f"retrain (untouched split, 5-fold group CV, fit): {training.wall:.2f} s wall, "
            f"{training.cpu:.2f} s CPU"
        )

        learned = tagger.with_model(TaggerModel.from_bytes(row.weights))
        embedder.clear_cache()
        with Timer() as learned_alone:
            learned.tag(batch)
        print(
            f"Tagger.tag, {args.comments} comments (learned model): "
            f"{learned_alone.wall:.2f} s wall, {learned_alone.cpu:.2f} s CPU"
        )

        session.execute(insert(FeedbackRow), feedback_rows(batch))
        session.commit()
        embedder.clear_cache()
        with Timer() as worker:
            result = tag_pending(session)
        assert result.tagged == args.comments, result
        print(
            f"tag_pending, {args.comments} comments (learned model, DB reads and writes): "
            f"{worker.wall:.2f} s wall, {worker.cpu:.2f} s CPU"
        )

    figures = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "load_average_at_start": round(load_before, 2),
            "platform": platform.platform(),
        },
        "comments": args.comments,
        "model_load": load.figures(),
        "tagger_tag": alone.figures(),
        "tagger_tag_learned": learned_alone.figures(),
        "retrain": training.figures(),
        "retrain_metrics": {
            protocol: {k: v for k, v in figures.items() if not isinstance(v, dict)}
            for protocol, figures in row.metrics.items()
            if isinstance(figures, dict)
        },
        "tag_pending": worker.figures(),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
