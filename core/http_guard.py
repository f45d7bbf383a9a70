"""Per-connection limits under uvicorn (collector and gateway): how big and how slow a
request's head may be, and how long a body nobody reads may keep a connection.

uvicorn's httptools protocol has none of these: a request head grows in memory for as long as
the client sends it (four unfinished 64 MiB heads took a collector from 157 to 523 MB), a
partial request line keeps its connection open forever (the keep-alive timer is cancelled by
any byte and armed again only after a response), and a body still trickling in after the
answer keeps the connection too. The subclass here counts and times what httptools does not.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

# After refusing a connection, how long it is held half-closed before it is closed. Closing a
# socket that still has unread bytes sends a reset, which can destroy the answer before the
# client reads it; meanwhile reading is paused, so a client still sending is held back by TCP
# and costs no work.
REFUSAL_LINGER_S = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one request's head may cost a server."""

    # Bytes of request line and headers. Node.js allows 16 KiB too; our clients send < 1 KiB.
    max_header_bytes: int = 16 * 1024
    # Header fields per request; Python's http.client refuses more than 100 as well.
    max_headers: int = 100
    # From a connection's start (or a request's first byte) until its head is complete; also
    # how long a body the app did not read may still arrive after the answer.
    header_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_header_bytes < 1024 or self.max_headers < 8 or self.header_timeout_s <= 0:
            raise ValueError(f"limits too small to serve any request: {self}")


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request that is being refused."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with ``limits`` on each request's head.

    A head over ``max_header_bytes`` or ``max_headers`` is answered 431; one not complete
    within ``header_timeout_s`` is answered 408 (a connection that sent nothing is just
    closed). Either way the connection is closed. Use ``guarded_protocol`` to set the limits.
    """

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # Between one request's end and the next one's headers, the bytes received count
        # against the head (and a timer runs) until the head is complete.
        self._in_head = True
        self._head_bytes = 0
        self._head_size = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms no timer before the first byte: an idle new connection would stay open.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own data_received, with the head counted and refusals answered as such.
        if self._refused:
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
            self._arm_head_timer()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
                return
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # Counted per read, so a head sent in many small pieces is stopped as soon as it is
        # too big; one read holds at most the transport's buffer size anyway.
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431, "request header fields too large")

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4
        if self._header_count > self.limits.max_headers:
            self._stop(431, f"more than {self.limits.max_headers} header fields")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        # Exact, for a head that arrived in one read.
        if self._head_size > self.limits.max_header_bytes:
            self._stop(431, "request header fields too large")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel_linger_timer()
        self._in_head = True
        self._head_bytes = self._head_size = self._header_count = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Answered before its body was read in full (a 401, a 429): the rest of the body may
        # still arrive, but not slowly, or it would hold the connection for as long as it
        # trickled (each byte cancels uvicorn's keep-alive timer).
        if (
            self.cycle is not None
            and self.cycle.more_body
            and not self.transport.is_closing()
            and self._linger_timer is None
        ):
            self._linger_timer = self.loop.call_later(
                self.limits.header_timeout_s, self.transport.close
            )

    def _stop(self, status: int, reason: str) -> None:
        self._refusal = (status, reason)
        raise _Refused(reason)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout_s, self._head_timed_out
            )

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes == 0:
            self.transport.close()
        else:
            self._refuse(408, f"request head not complete in {self.limits.header_timeout_s:g} s")

    def _refuse(self, status: int, reason: str) -> None:
        self._refused = True
        self._cancel_timers()
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request is still being answered: a refusal would interleave with it.
            self.transport.close()
            return
        body = reason.encode("ascii")
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: text/plain; charset=utf-8\r\n"
            + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            + body
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.pause_reading()
        self._linger_timer = self.loop.call_later(REFUSAL_LINGER_S, self.transport.close)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_linger_timer(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        self._cancel_linger_timer()


def guarded_protocol(limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to give uvicorn as ``http=``, enforcing ``limits``."""

    class Guarded(GuardedHttpToolsProtocol):
        pass

    Guarded.limits = limits
    return Guarded
