"""The sidecar's HTTP API (design.md's table), as a FastAPI app built by ``create_app(service)``.

This module only translates: HTTP in, ``sidecar.service.Broker`` calls, exceptions out as
``{"error": {"code", "message"}}`` with the design's status codes. Every decision lives in the service.

Speed matters on ``GET /v1/secrets/{name}`` (an app may read a secret per request): handlers are
``async`` (a sync ``def`` costs a thread hop), take the raw ``Request`` (no dependency injection or
response-model validation) and build their JSON bytes directly; pydantic models below exist only to
document the API in OpenAPI. The peer credentials come from the protocol (``sidecar.protocol``), never
from the request.

Never logs a token or a value; error messages never contain either.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from json.encoder import encode_basestring
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from depthguard import __version__
from depthguard.errors import (
    AccessError,
    BackendError,
    ConfigError,
    DepthguardError,
    Forbidden,
    SecretNotFound,
    Unauthorized,
    UsageError,
)
from sidecar.metrics import SidecarMetrics
from sidecar.peercred import PeerCred
from sidecar.protocol import Answer, peer_of
from sidecar.service import Broker, NotFoundInScope, RateLimited, SecretRead

__all__ = ["HotPath", "create_app", "error_response"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON = "application/json"


# ------------------------------------------------------------------ documentation-only models


class ErrorBody(BaseModel):
    code: str = Field(
        description="unauthorized | forbidden | not_found | unavailable | bad_request | rate_limited")
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


class TokenRequest(BaseModel):
    role: str | None = Field(default=None, description="Optional when the calling uid has exactly one role.")


class TokenOut(BaseModel):
    token: str
    token_type: str = "Bearer"
    expires_at: float = Field(description="Epoch seconds.")
    role: str
    scopes: list[str]


class SecretListOut(BaseModel):
    secrets: list[str]


class SecretOut(BaseModel):
    name: str
    value: str
    encoding: str = Field(description="utf-8, or base64 when the value is not UTF-8 text (an extension).")
    version: str | None
    expires_at: float | None = Field(
        description="Lease expiry (epoch seconds) for dynamic secrets, else null.")
    backend: str


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorOut} for s in statuses}


# ------------------------------------------------------------------ responses


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(data, status_code=status, media_type=_JSON, headers=headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"error": {"code": code, "message": message}}, headers)


def _status_of(exc: DepthguardError) -> tuple[int, str, dict[str, str] | None]:
    if isinstance(exc, RateLimited):
        return 429, "rate_limited", {"retry-after": str(max(1, round(exc.retry_after)))}
    if isinstance(exc, Unauthorized):
        return 401, "unauthorized", {"www-authenticate": "Bearer"}
    if isinstance(exc, NotFoundInScope | SecretNotFound):
        return 404, "not_found", None
    if isinstance(exc, Forbidden | AccessError):
        return 403, "forbidden", None
    if isinstance(exc, BackendError):
        return 503, "unavailable", None
    if isinstance(exc, UsageError | ConfigError):
        return 400, "bad_request", None
    return 500, "internal", None


_HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 503: "unavailable"}


async def _on_project_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DepthguardError)
    status, code, headers = _status_of(exc)
    return error_response(status, code, str(exc), headers)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "bad_request")
    message = exc.detail if isinstance(exc.detail, str) else "request refused"
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    return error_response(422, "bad_request", "request does not match the API")


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # The class name only: an exception's text could quote data we must not echo.
    return error_response(500, "internal", f"internal error ({type(exc).__name__})")


# ------------------------------------------------------------------ the hot path and metrics


_SECRETS_PREFIX = "/v1/secrets/"
_SECRET_ROUTE = "/v1/secrets/{name}"


def _raw_json(status: int, body: object, headers: dict[str, str] | None = None) -> Answer:
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if headers:
        raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return status, data, raw


async def _secret_answer(service: Broker, scope: Scope) -> Answer:
    """``GET /v1/secrets/{name}``: shared by the fast path and the (documenting) FastAPI route.

    ``scope["path"]`` is already percent-decoded by the server, exactly what Starlette's ``{name:path}``
    converter would hand over, so ``..%2F``, ``%00`` and friends arrive as the literal characters and
    can only ever be compared against configured names."""
    try:
        peer = peer_of(scope)
        claims = service.authenticate(peer, _authorization(scope))
        assert peer is not None  # authenticate refuses a connection without credentials
        got = await service.read_secret(claims, peer, scope["path"][len(_SECRETS_PREFIX):])
    except DepthguardError as exc:
        return _error_answer(exc)
    return _ok_answer(got)


def _cached_answer(service: Broker, peer: PeerCred | None, path: str, authorization: str | None
                   ) -> Answer | None:
    """``_secret_answer`` for a request the cache can answer at once; ``None`` when it cannot (a miss:
    the value must come from the backend, on the ASGI path)."""
    try:
        claims = service.authenticate(peer, authorization)
        assert peer is not None  # authenticate refuses a connection without credentials
        got = service.read_cached(claims, peer, path[len(_SECRETS_PREFIX):])
    except DepthguardError as exc:
        return _error_answer(exc)
    return None if got is None else _ok_answer(got)


def _error_answer(exc: DepthguardError) -> Answer:
    status, code, headers = _status_of(exc)
    return _raw_json(status, {"error": {"code": code, "message": str(exc)}}, headers)


def _internal_error(exc: Exception) -> Answer:
    """A bug on the read path: logged with its traceback, answered 500 naming only the class."""
    log.exception("GET /v1/secrets failed: %s", type(exc).__name__)
    message = f"internal error ({type(exc).__name__})"
    return _raw_json(500, {"error": {"code": "internal", "message": message}})


def _ok_answer(got: SecretRead) -> Answer:
    data = secret_body(got)
    return 200, data, [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]


def _json_scalar(value: object) -> str:
    """One JSON value as ``json.dumps(value, ensure_ascii=False)`` writes it."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return encode_basestring(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return json.dumps(value, ensure_ascii=False)


def secret_body(got: SecretRead) -> bytes:
    """The 200 body of a secret read, byte for byte what ``_raw_json`` would make of the same dict.

    Built from pieces because ``json.dumps`` of this six-key dict cost more than a cached read's
    decryption, audit record and policy check together (it is on every read)."""
    text, encoding = _encode_value(got.value.value)
    return (f'{{"name":{encode_basestring(got.name)},"value":{encode_basestring(text)},'
            f'"encoding":"{encoding}","version":{_json_scalar(got.value.version)},'
            f'"expires_at":{_json_scalar(got.value.expires_at)},"backend":{encode_basestring(got.backend)}}}'
            ).encode()


def _observe(metrics: SidecarMetrics, route: str, method: str, status: int, start: float) -> None:
    """Count one request by route *template* and status, and time it. Never the raw path: secret
    names must not become label values (cardinality, and a prober's guesses would show up)."""
    metrics.requests.inc(route, method, str(status))
    metrics.latency.observe(route, value=time.perf_counter() - start)


class _Metrics:
    """Pure ASGI middleware (just inside Starlette's error handler): metrics for every routed request."""

    def __init__(self, app: ASGIApp, metrics: SidecarMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            label = getattr(route, "path_format", None) or "unmatched"
            _observe(self.metrics, label, scope["method"], status, start)


class HotPath:
    """The ASGI app the server runs: ``GET /v1/secrets/...`` is answered here, everything else goes
    to the FastAPI app.

    Why: on a cached read, FastAPI's and Starlette's layers (routing, dependency solving, exception
    and error middleware) cost more than the read itself, and issue 6 §7 sets a throughput floor
    relative to a bare uvicorn endpoint. The answer comes from the same ``_secret_answer`` the
    FastAPI route uses, so both paths give byte-identical results; the route remains for OpenAPI and
    for anyone serving ``create_app`` directly. ``answer_now`` goes one step further for reads that
    need no I/O: the protocol calls it before any ASGI machinery is set up."""

    def __init__(self, app: FastAPI, service: Broker) -> None:
        self.app = app
        self.service = service
        self.metrics = service.metrics
        # Lock-free metric cells: the server calls this app from its one event-loop thread only.
        self._counts: dict[int, list[float]] = {}
        self._latency = service.metrics.latency.cell(_SECRET_ROUTE)

    def _observe(self, status: int, start: float) -> None:
        """``_observe`` for this route, through the lock-free cells."""
        cell = self._counts.get(status)
        if cell is None:
            cell = self._counts[status] = self.metrics.requests.cell(_SECRET_ROUTE, "GET", str(status))
        cell[0] += 1
        self._latency.observe(time.perf_counter() - start)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (scope["type"] == "http" and scope["method"] == "GET"
                and scope["path"].startswith(_SECRETS_PREFIX)):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            status, body, headers = await _secret_answer(self.service, scope)
        except Exception as exc:  # what Starlette's error middleware does for the other routes
            status, body, headers = _internal_error(exc)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self._observe(status, start)

    def answer_now(self, peer: PeerCred | None, path: str, authorization: str | None) -> Answer | None:
        """The answer to ``GET path`` (a path under ``/v1/secrets/``) if it needs no I/O: a cache hit
        or a refusal. ``None``: serve the request through ``__call__`` as usual.

        Called by the protocol (``sidecar.protocol``) from its parser callback, on the event loop,
        for bodiless GETs on an idle connection. Same answers, metrics and audit records as
        ``__call__``; only the asyncio task and the ASGI messages are skipped, which were a third
        of a cached read's cost. Latency is measured to the answer being ready (the write follows)."""
        start = time.perf_counter()
        try:
            answer = _cached_answer(self.service, peer, path, authorization)
        except Exception as exc:
            answer = _internal_error(exc)
        if answer is not None:
            self._observe(answer[0], start)
        return answer


# ------------------------------------------------------------------ the app


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


def _role_from_body(body: bytes) -> str | None:
    """``{"role": "web"}``, ``{}`` or no body at all. Parsed by hand so ``curl -d '{"role":"web"}'``
    works whatever Content-Type curl sends."""
    if not body.strip():
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise UsageError("the body must be JSON, e.g. {\"role\": \"web\"}") from None
    if not isinstance(data, dict) or set(data) - {"role"}:
        raise UsageError("the body must be an object with at most a \"role\" key")
    role = data.get("role")
    if role is not None and not isinstance(role, str):
        raise UsageError("\"role\" must be a string")
    return role


def _encode_value(value: bytes) -> tuple[str, str]:
    try:
        return value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii"), "base64"


_BEARER: dict[str, Any] = {"security": [{"bearer": []}]}


def create_app(service: Broker) -> FastAPI:
    """The API for ``service``. No docs UI and no ``/openapi.json`` route: exactly design.md's routes
    are served (tests and tools take the schema from ``app.openapi()``)."""
    app = FastAPI(
        title="depthguard sidecar", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
        # No OpenTelemetry: spans would carry request paths (secret names) off the host, and the
        # per-request provider check costs more than a cached read.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )

    @app.post(
        "/v1/token", response_model=None, responses={200: {"model": TokenOut}, **_errors(400, 403, 429)},
        openapi_extra={"requestBody": {"required": False, "content": {
            _JSON: {"schema": TokenRequest.model_json_schema()}}}},
    )
    async def issue_token(request: Request) -> Response:
        """A token for the calling uid (identified by the kernel's peer credentials)."""
        role = _role_from_body(await request.body())
        token, claims = service.issue_token(peer_of(request.scope), role)
        return _json(200, {"token": token, "token_type": "Bearer", "expires_at": claims.exp,
                           "role": claims.role, "scopes": list(claims.scopes)})

    @app.post("/v1/token/revoke", status_code=204, response_model=None,
              responses=_errors(401, 403, 429), openapi_extra=_BEARER)
    async def revoke_token(request: Request) -> Response:
        """Revoke the presented token (it is refused from now on)."""
        peer = peer_of(request.scope)
        claims = service.authenticate(peer, _authorization(request.scope))
        assert peer is not None  # authenticate refuses a connection without credentials
        service.revoke(claims, peer)
        return Response(status_code=204)

    @app.get("/v1/secrets", response_model=None,
             responses={200: {"model": SecretListOut}, **_errors(401, 403, 429)}, openapi_extra=_BEARER)
    async def list_secrets(request: Request) -> Response:
        """The configured secret names the token's scopes allow."""
        claims = service.authenticate(peer_of(request.scope), _authorization(request.scope))
        return _json(200, {"secrets": service.list_secrets(claims)})

    @app.get("/v1/secrets/{name:path}", response_model=None,
             responses={200: {"model": SecretOut}, **_errors(401, 403, 404, 429, 503)},
             openapi_extra={**_BEARER, "parameters": [
                 {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]})
    async def read_secret(request: Request) -> Response:
        """One secret's value. Names outside the token's scope, known or not, answer 403.

        The server answers this path in ``HotPath`` before routing; this route documents it and
        serves it when ``create_app`` is run directly."""
        status, body, headers = await _secret_answer(service, request.scope)
        return Response(body, status_code=status, headers={k.decode(): v.decode() for k, v in headers})

    @app.get("/v1/health", response_model=None)
    async def health() -> Response:
        """Liveness: the process answers."""
        return _json(200, {"status": "ok"})

    @app.get("/v1/ready", response_model=None, responses=_errors(503))
    async def ready() -> Response:
        """Readiness: every configured secret can be served (its backend answers, or the cache still
        holds it within max staleness)."""
        ok, backends = await service.readiness()
        if ok:
            return _json(200, {"status": "ready", "backends": backends})
        message = "a secret can be served neither by its backend nor from the cache"
        body = {"status": "not_ready", "error": {"code": "unavailable", "message": message},
                "backends": backends}
        return _json(503, body)

    @app.get("/metrics", response_model=None)
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_exception_handler(DepthguardError, _on_project_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(_Metrics, metrics=service.metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
