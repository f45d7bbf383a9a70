"""Real servers for the tests: the collector under uvicorn in a thread, and a TCP proxy.

Both listen on loopback ports the kernel picks, and every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator, Mapping

from collector.config import CollectorSettings
from collector.main import create_app
from core.http_service import running_in_thread
from serving.backend import Backend
from serving.gateway.assembly import assembled_gateway
from serving.gateway.config import GatewaySettings
from serving.gateway.server import running

SHUTDOWN_TIMEOUT_S = 20.0

# Short, so the revocation test waits little; long enough that a burst of requests shares it.
AUTH_CACHE_TTL_S = 0.3
MAX_BODY_BYTES = 64 * 1024
MAX_BATCH_EVENTS = 50
RETRY_AFTER_S = 3
HTTP_TIMEOUT_S = 15.0


def collector_settings(database_url: str, **overrides: object) -> CollectorSettings:
    """Collector settings for tests: small limits, a short auth cache."""
    values: dict[str, object] = {
        "database_url": database_url,
        "environment": "test",
        "max_event_age_days": 7,
        "retention_days": 90,
        "partitions_ahead_days": 7,
        "max_batch_events": MAX_BATCH_EVENTS,
        "max_body_bytes": MAX_BODY_BYTES,
        "max_clock_skew_s": 600,
        "db_pool_min": 1,
        "db_pool_max": 4,
        "db_timeout_s": 2.0,
        "retry_after_s": RETRY_AFTER_S,
        "auth_cache_ttl_s": AUTH_CACHE_TTL_S,
    }
    values.update(overrides)
    return CollectorSettings.model_validate(values)


def _listening_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


@contextlib.contextmanager
def run_collector(settings: CollectorSettings) -> Iterator[str]:
    """Serve ``create_app(settings)`` on a free loopback port; yield its base URL."""
    with running_in_thread(create_app(settings), name="collector") as url:
        yield url


class _Link:
    """One proxied connection: two sockets and a pump thread per direction."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self._sockets = (client, upstream)
        self._threads = [
            threading.Thread(target=self._pump, args=(src, dst), daemon=True)
            for src, dst in ((client, upstream), (upstream, client))
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        # shutdown() (unlike close()) wakes a thread blocked in recv() on the same socket.
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.shutdown()
        for thread in self._threads:
            thread.join(SHUTDOWN_TIMEOUT_S)
        for sock in self._sockets:
            sock.close()


class TcpProxy:
    """Forwards a loopback port to ``target``; ``stop()`` breaks every connection and refuses
    new ones until ``start()``, which listens on the same port again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self.port = 0

    def start(self) -> None:
        """Listen (again) and forward new connections."""
        listener = _listening_socket(self.port)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was shut down
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._links.append(_Link(client, upstream))

    def stop(self) -> None:
        """Close the port and break every forwarded connection."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        if self._acceptor is not None:
            self._acceptor.join(SHUTDOWN_TIMEOUT_S)
            self._acceptor = None
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()


@contextlib.contextmanager
def running_gateway(
    settings: GatewaySettings, backends: Mapping[str, Backend] | None = None
) -> Iterator[str]:
    """The gateway as every caller assembles it (``serving.gateway.assembly``), served in a
    thread on a free loopback port; yields its base URL."""
    with assembled_gateway(settings, backends=backends) as app, running(app) as url:
        yield url
