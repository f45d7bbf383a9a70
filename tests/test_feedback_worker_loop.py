"""The periodic tagging worker (``codelift feedback tag --loop``) outlives a database outage.

The shared PostgreSQL server is never stopped: the worker reaches a database of its own through
a TCP proxy that the test closes and reopens.
"""

from __future__ import annotations

from sqlalchemy.engine import make_url

from core.db.session import session_for
from feedback.store import search_comments
from feedback.worker import TagRunResult, tag_periodically
from migrations.runner import upgrade
from tests.database import fresh_database
from tests.feedback_factories import add_comment
from tests.servers import TcpProxy


def test_a_run_during_an_outage_is_retried_and_the_comment_tagged() -> None:
    with fresh_database("codelift_tagloop") as url:
        upgrade(url)
        with session_for(url) as session:
            add_comment(session, "completions are laggy and time out", rating=1)
            session.commit()
        parsed = make_url(url)
        proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
        proxy.start()
        proxied = parsed.set(port=proxy.port).render_as_string(hide_password=False)
        proxy.stop()  # down when the worker's first run starts
        waits: list[float] = []

        def sleep(seconds: float) -> None:
            # The database comes back while the worker waits out its back-off.
            waits.append(seconds)
            proxy.start()

        reported: list[TagRunResult] = []
        try:
            outcomes = tag_periodically(
                proxied, interval_s=60.0, runs=2, sleep=sleep, report=reported.append
            )
        finally:
            proxy.stop()

        failed, succeeded = outcomes
        assert failed is None and waits == [1.0], "the first retry comes after 1 s, not 60"
        assert succeeded is not None and succeeded.tagged == 1 and reported == [succeeded]
        with session_for(url) as session:
            assert search_comments(session, tagged=False) == []
