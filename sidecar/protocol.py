"""uvicorn's httptools protocol, plus the kernel's peer credentials and request size limits.

uvicorn does not put ``SO_PEERCRED`` in the ASGI scope, and the peer cannot be recovered later from a
request. So ``connection_made`` reads the credentials once per connection (the kernel fixed them at
``connect``), and ``on_message_begin`` hands the same object to every request of that connection as
``scope["extensions"]["depthguard.peer"]`` (``None`` when the transport has no credentials, e.g. TCP:
the app must then refuse anything that needs an identity).

Size limits live here rather than in middleware because httptools buffers an unfinished header line
without bound and starts the app as soon as the headers end: the protocol is the only place that can
refuse an oversized header block (431) before buffering it all, or a too-large declared body (413)
before the app runs. Rejections are written directly as the API's JSON error with ``connection: close``.
The header block is measured when it ends; until then ``data_received`` bounds it by raw bytes (the
limit plus 1 KiB), so one read's worth is the most ever buffered.

Cache hits are answered here too (``FastReader``, ``on_message_complete``): a bodiless ``GET`` under
``/v1/secrets/`` on an idle connection is answered synchronously, in one write, without uvicorn's
request cycle, task and ASGI messages; everything else goes to the app as usual.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from sidecar.peercred import PeerCred, read_peercred

__all__ = [
    "FAST_PREFIX", "PEER_KEY", "FastReader", "PeerCredProtocol", "ProtocolLimits", "make_protocol", "peer_of",
]

PEER_KEY = "depthguard.peer"
log = logging.getLogger(__name__)


@dataclass
class ProtocolLimits:
    """Mutable on purpose: a config reload updates the limits of the running server in place."""

    max_header_bytes: int = 8192
    """Request line + header names and values (+4 bytes per header for ': ' and CRLF)."""
    max_body_bytes: int = 16384
    on_reject: Callable[[int], None] | None = None
    """Called with the status (413/431) of every request refused here (metrics)."""


Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]


class FastReader(Protocol):
    def answer_now(self, peer: PeerCred | None, path: str, authorization: str | None) -> Answer | None:
        """(status, body, headers) for ``GET path``, or ``None`` to go through the ASGI app instead.
        Called on the event loop; must not block."""

FAST_PREFIX = "/v1/secrets/"
"""Requests under this path are offered to ``FastReader.answer_now`` (``HotPath.answer_now`` serves them)."""


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def peer_of(scope: MutableMapping[str, Any]) -> PeerCred | None:
    """The peer credentials the protocol put in ``scope`` (``None``: no kernel identity)."""
    ext = scope.get("extensions")
    peer: PeerCred | None = ext.get(PEER_KEY) if ext else None
    return peer


class PeerCredProtocol(HttpToolsProtocol):
    """Adds ``peer`` (per connection) and header/body limits to uvicorn's httptools protocol."""

    limits: ClassVar[ProtocolLimits] = ProtocolLimits()
    fast: ClassVar[FastReader | None] = None
    peer: PeerCred | None = None
    _fast_path: str | None = None  # set between on_headers_complete and on_message_complete
    _fast_keep_alive = True
    _authorization: bytes | None = None
    _idle_since: float | None = None  # loop time the last fast answer left the connection idle
    _lazy_timer = False  # timeout_keep_alive_task is ours (_keep_alive_expired), not uvicorn's
    _raw_header_bytes = 0
    _body_bytes = 0
    _in_headers = False
    _rejected = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        try:
            self.peer = read_peercred(sock) if sock is not None else None
        except OSError:
            self.peer = None  # not a Unix socket (tests on TCP): no identity, the app refuses
        super().connection_made(transport)

    # -------------------------------------------------------------- parsing with limits

    def data_received(self, data: bytes) -> None:
        """uvicorn's ``data_received``, except that a limit raised in a parser callback becomes our
        413/431 instead of a generic 400, and an unfinished header block cannot grow without bound."""
        if self._rejected:
            return
        if self._lazy_timer:
            self._idle_since = None  # busy: the lazy keep-alive timer, if it fires, leaves us open
        else:
            self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
            if self._in_headers:
                self._raw_header_bytes += len(data)
                if self._raw_header_bytes > self.limits.max_header_bytes + 1024:
                    raise _Reject(431, "request headers too large")
        except _Reject as rej:
            self._reject(rej)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Reject):  # httptools wraps callback exceptions
                self._reject(exc.__context__)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {PEER_KEY: self.peer}  # type: ignore[dict-item]  # ASGI allows any value
        self._raw_header_bytes = self._body_bytes = 0
        self._in_headers = True

    def on_headers_complete(self) -> None:
        # The header block is measured here, once, rather than per header as it is parsed: a header
        # block still growing is bounded by data_received's raw byte count, and one callback per
        # header was a measurable share of a cached read.
        self._in_headers = False
        size = len(self.url)
        authorization: bytes | None = None
        lengths: list[bytes] = []
        body = False
        for name, value in self.headers:
            size += len(name) + len(value) + 4
            if name == b"authorization":
                if authorization is None:
                    authorization = value
            elif name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                body = True
        if size > self.limits.max_header_bytes:
            raise _Reject(431, "request headers too large")
        limit = self.limits.max_body_bytes
        for value in lengths:
            try:
                declared = int(value)
            except ValueError:
                raise _Reject(400, "invalid content-length") from None
            if declared > limit:
                raise _Reject(413, f"request body larger than {limit} bytes")
            body = body or declared > 0
        self._authorization = authorization
        if not body and self.fast is not None and self._offer_fast():
            return  # answered in on_message_complete, or handed to uvicorn there
        super().on_headers_complete()

    # -------------------------------------------------------------- answers without the ASGI app

    def _offer_fast(self) -> bool:
        """Whether this request may be answered synchronously: a bodiless ``GET`` under
        ``FAST_PREFIX`` on a connection with no response in progress or queued (so responses stay
        in request order) and a transport accepting writes (else uvicorn's path waits for it).
        The path is decoded exactly as uvicorn decodes ``scope["path"]``."""
        parser = self.parser
        cycle = self.cycle
        if (parser.get_method() != b"GET" or self.expect_100_continue or parser.should_upgrade()
                or (cycle is not None and not cycle.response_complete) or self.pipeline
                or self.flow.write_paused or self.limit_concurrency is not None or self.root_path):
            return False
        try:
            path = httptools.parse_url(self.url).path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            return False  # uvicorn's own handling decides what to answer
        if "%" in path:
            path = urllib.parse.unquote(path)
        if not path.startswith(FAST_PREFIX):
            return False
        self._fast_path = path
        self._fast_keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        return True

    def on_message_complete(self) -> None:
        path = self._fast_path
        if path is None:
            super().on_message_complete()
            return
        self._fast_path = None
        if self.transport.is_closing():
            return  # pipelined behind a "connection: close" answer: nobody will read a reply
        assert self.fast is not None
        raw = self._authorization
        answer = self.fast.answer_now(self.peer, path, None if raw is None else raw.decode("latin-1"))
        if answer is None:  # needs I/O: the usual task and ASGI app, as if never offered
            super().on_headers_complete()
            super().on_message_complete()
            return
        status, body, headers = answer
        self._write_response(status, headers, body, close=not self._fast_keep_alive)
        # uvicorn's on_response_complete, but with a lazy keep-alive timer: it cancels and re-arms a
        # loop timer per response (~2 µs); this one is armed once and, when it fires, re-armed for
        # whatever remains of the idle timeout (reading was never paused: no cycle was running).
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self._keep_alive_expired)
            self._lazy_timer = True

    def _keep_alive_expired(self) -> None:
        self.timeout_keep_alive_task = None
        self._lazy_timer = False
        if self._idle_since is None:
            return  # a request is in progress; whatever answers it arms the timer again
        remaining = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if remaining > 0:
            self.timeout_keep_alive_task = self.loop.call_later(remaining, self._keep_alive_expired)
            self._lazy_timer = True
        else:
            self.timeout_keep_alive_handler()

    def on_response_complete(self) -> None:
        # An ASGI response: uvicorn cancels whichever timer is pending and arms its own.
        self._lazy_timer = False
        super().on_response_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:  # chunked bodies declare no length
            raise _Reject(413, f"request body larger than {self.limits.max_body_bytes} bytes")
        super().on_body(body)

    def _reject(self, rej: _Reject) -> None:
        """Answer with the API's JSON error and close: the rest of the stream cannot be trusted."""
        self._rejected = True
        hook = self.limits.on_reject
        if hook is not None:
            hook(rej.status)
        code = "bad_request"
        body = json.dumps({"error": {"code": code, "message": rej.message}}).encode()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.response_started:
            self.transport.close()  # the app already answered part of it: nothing sane to add
            return
        if cycle is not None:
            # The app may already be running (chunked body): make its receive() see a disconnect
            # and its send() a no-op, so nothing is written after our answer.
            cycle.disconnected = True
            cycle.message_event.set()
        self._write_response(rej.status, [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode())], body, close=True)

    def _write_response(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *,
                        close: bool) -> None:
        """One whole response in one write (status line, the server's default headers, ``headers``,
        ``connection: close`` when closing, body); then close if asked."""
        head = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *headers):
            head += [name, b": ", value, b"\r\n"]
        if close:
            head.append(b"connection: close\r\n")
        head += [b"\r\n", body]
        self.transport.write(b"".join(head))
        if close:
            self.transport.close()


def make_protocol(limits: ProtocolLimits, fast: FastReader | None = None) -> type[PeerCredProtocol]:
    """A protocol class bound to ``limits`` and, if given, answering what ``fast`` can answer at once
    (uvicorn instantiates the class once per connection)."""
    return type("SidecarHttpProtocol", (PeerCredProtocol,), {"limits": limits, "fast": fast})
