"""The broker service behind the HTTP routes: every access decision, cache read and audit record.

Why a separate layer: the routes only translate HTTP to calls and exceptions to statuses; everything
that decides (peer → role → token → scope → cache → audit) lives here, so it reads top to bottom in one
file and can be exercised without HTTP. The configuration-derived parts (backends, policy, cache,
renderers, limiters) form one immutable ``_State`` that ``reload`` swaps in whole, so a request sees
either the old or the new configuration, never a mix. Signing keys, revocations and the audit chain
outlive reloads.

Hot path (a cached ``GET /v1/secrets/{name}``): token verification is cached per token string by
``TokenService``; the scope check is a few string compares; the value comes from ``SecretCache.peek``
(a fresh entry, decrypted under the cache lock, no thread hop); the audit record is queued. Only a cache
miss goes to a worker thread, because ``SecretCache.get`` may block on the backend.

This module never logs or raises with a secret value or a token; audit records carry an HMAC
fingerprint of the value at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from broker.audit import AuditLog
from broker.backends.interface import SecretBackend, SecretRef, SecretValue
from broker.cache import CounterName, SecretCache
from broker.policy import Policy
from broker.ratelimit import RateLimiter
from broker.tokens import Claims, KeyRing, TokenService
from depthguard.errors import (
    AccessError,
    BackendError,
    BackendUnavailable,
    ConfigError,
    DepthguardError,
    Forbidden,
    SecretNotFound,
    Unauthorized,
    UsageError,
)
from sidecar.config import SidecarConfig, build_backends, policy_from
from sidecar.metrics import SidecarMetrics
from sidecar.peercred import PeerCred
from sidecar.protocol import ProtocolLimits
from sidecar.render import Renderer

__all__ = ["Broker", "RateLimited", "SecretRead"]

log = logging.getLogger(__name__)

_RATE_AUDIT_EVERY = 10.0
"""Seconds between ``rate.limited`` audit records per (limit, uid): a flood must not flood the log."""
_HEALTH_TTL = 2.0
_FINGERPRINT_MEMO = 1024
"""Fingerprints kept for values served from the cache (one per fetch; cleared when full)."""
"""Seconds a backend health answer is reused by ``/v1/ready`` (health calls can be network round trips)."""


class RateLimited(AccessError):
    """Too many token requests or failed authentications from one uid (HTTP 429)."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason, "too many requests; retry later")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class SecretRead:
    """One successful read, as the route answers it."""

    name: str
    value: SecretValue
    backend: str


@dataclass(frozen=True, slots=True)
class _Secret:
    ref: SecretRef
    key: str
    """``str(ref)``: the cache key, computed once."""
    refresh: float | None


class _CacheHooks:
    """``broker.cache.Metrics`` for the sidecar: metrics, plus audit records for the cache's own
    backend calls (renewals and failures happen in its threads, where no request can record them)."""

    def __init__(self, metrics: SidecarMetrics, audit: AuditLog) -> None:
        self._metrics = metrics
        self._audit = audit

    def count(self, counter: CounterName, key: str) -> None:
        self._metrics.count(counter, key)
        if counter == "renewals":
            self._audit.record("lease.renew", "info", ref=key)
        elif counter == "errors":
            self._metrics.backend_errors.inc(key.partition(":")[0], "refresh")
            self._audit.record("backend.error", "info", reason="backend_call_failed", ref=key)

    def staleness(self, key: str, seconds: float) -> None:
        self._metrics.staleness(key, seconds)


@dataclass(frozen=True)
class _State:
    """Everything built from one configuration; replaced whole by ``reload``."""

    config: SidecarConfig
    backends: dict[str, SecretBackend]
    policy: Policy
    secrets: dict[str, _Secret]
    cache: SecretCache
    renderers: tuple[tuple[str, Renderer], ...]
    token_limiter: RateLimiter
    auth_limiter: RateLimiter


class Broker:
    """The sidecar's service object. Thread-safe where it must be (cache, tokens, audit, limiters);
    request methods are called from the event loop."""

    def __init__(
        self,
        config: SidecarConfig,
        *,
        audit: AuditLog,
        metrics: SidecarMetrics | None = None,
        dev_refresh: Callable[[], SidecarConfig] | None = None,
        render_interval: float = 1.0,
    ) -> None:
        """``audit`` is built by the caller (``sidecar.server``) so its sinks are opened once per process.
        ``dev_refresh`` (``run --dev``): re-reads the store's names when an unknown name is asked for,
        so a secret put after start-up is served without a reload."""
        self.metrics = metrics or SidecarMetrics()
        self.audit = audit
        self.limits = ProtocolLimits(on_reject=lambda status: self.metrics.rejected.inc(str(status)))
        tc = config.tokens
        self.keyring = KeyRing(key_file=tc.key_file, rotate_every=tc.rotate, max_token_ttl=tc.max_ttl,
                               leeway=tc.leeway)
        self.tokens = TokenService(self.keyring, issuer=tc.issuer, audience=config.token_audience(),
                                   leeway=tc.leeway, max_ttl=tc.max_ttl)
        self._dev_refresh = dev_refresh
        self._render_interval = render_interval
        self._state = self._build(config)
        self._apply_limits(config)
        self._rate_audited: dict[tuple[str, int], float] = {}
        self._fingerprints: dict[bytes, str] = {}
        self._health: tuple[float, dict[str, bool]] = (0.0, {})
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._reload_lock = threading.Lock()

    # ------------------------------------------------------------------------------ building

    @property
    def config(self) -> SidecarConfig:
        return self._state.config

    def _build(self, config: SidecarConfig, *, backends: dict[str, SecretBackend] | None = None,
               cache: SecretCache | None = None) -> _State:
        """Build everything from ``config``; raises ``ConfigError`` and leaves nothing half-open."""
        built = backends if backends is not None else build_backends(config)
        try:
            policy = policy_from(config)
            secrets = {
                name: _Secret(spec.secret_ref, str(spec.secret_ref), spec.refresh)
                for name, spec in config.secrets.items()
            }
            renderers = tuple(
                (name, Renderer(name, spec.render)) for name, spec in config.secrets.items() if spec.render
            )
            lim = config.limits
            token_limiter = RateLimiter(lim.token_rate_per_minute, lim.token_burst)
            failures = lim.auth_failures_per_minute
            auth_limiter = RateLimiter(failures, max(1, int(failures)))  # burst: one minute's worth
        except (ValueError, TypeError) as exc:
            if backends is None:
                for b in built.values():
                    b.close()
            raise ConfigError(config.source, "", str(exc)) from exc
        except BaseException:
            if backends is None:
                for b in built.values():
                    b.close()
            raise
        if cache is None:
            cache = SecretCache(config.cache_policy(), metrics=_CacheHooks(self.metrics, self.audit))
        return _State(config, built, policy, secrets, cache, renderers, token_limiter, auth_limiter)

    def _apply_limits(self, config: SidecarConfig) -> None:
        self.limits.max_body_bytes = config.limits.max_body_bytes
        self.limits.max_header_bytes = config.limits.max_header_bytes

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the audit log, the cache refresher and the warm-up/render worker."""
        self.audit.start()  # writes the "start" record
        self._state.cache.start()
        self._worker = threading.Thread(target=self._work, name="depthguard-render", daemon=True)
        self._worker.start()

    def close(self) -> None:
        """Stop background work, give leases back if configured, close backends, then the audit log
        (which writes its ``stop`` record and flushes). Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        st = self._state
        st.cache.close(revoke=st.config.revoke_on_shutdown)
        for backend in st.backends.values():
            with contextlib.suppress(Exception):
                backend.close()
        self.audit.close()

    def _work(self) -> None:
        """Warm the cache (at start and after each reload), then keep rendered files current (each
        render writes only on change)."""
        warmed: _State | None = None
        while True:
            st = self._state
            names = list(st.secrets) if st is not warmed else [name for name, _ in st.renderers]
            warmed = st
            renderers = dict(st.renderers)
            for name in names:
                if self._stop.is_set():
                    return
                secret = st.secrets[name]
                try:
                    value = st.cache.get(secret.ref, st.backends[secret.ref.backend], refresh=secret.refresh)
                    renderer = renderers.get(name)
                    if renderer is not None and renderer.render(value):
                        self.audit.record("secret.render", "info", secret=name)
                except DepthguardError as exc:
                    log.warning("secret %s: %s", name, type(exc).__name__)
                except OSError as exc:
                    log.warning("rendering %s failed: %s", name, exc.strerror or type(exc).__name__)
            if self._stop.wait(self._render_interval):
                return

    def reload(self, load: Callable[[], SidecarConfig]) -> bool:
        """Load and build a new configuration, then swap it in; on any error keep the old one.

        Signing keys, revocations and the audit log are kept; the listening socket cannot change
        without a restart (a changed ``listen`` is reported and ignored). When ``backends:`` and
        ``cache:`` are unchanged (the usual case: roles or secrets edited) the backends and the cache
        are kept too, so cached values, leases and stale-if-error survive the reload."""
        with self._reload_lock:
            old = self._state
            try:
                config = load()
                same = config.backends == old.config.backends and config.cache == old.config.cache
                new = (self._build(config, backends=old.backends, cache=old.cache) if same
                       else self._build(config))
            except DepthguardError as exc:
                self.metrics.reloads.inc("error")
                self.audit.record("config.reload", "deny", reason=str(exc)[:500])
                log.error("config reload failed, keeping the previous configuration: %s", exc)
                return False
            if config.listen != old.config.listen:
                log.warning("listen: changes need a restart; still serving %s", old.config.listen.socket)
            if config.tokens != old.config.tokens or config.audit != old.config.audit:
                log.warning("tokens: and audit: changes need a restart; the running ones are kept")
            self._state = new
            self._apply_limits(config)
            self.metrics.reloads.inc("ok")
            self.audit.record("config.reload", "allow", secrets=len(new.secrets), roles=len(config.roles))
            if new.cache is old.cache:
                return True
            new.cache.start()

        def retire() -> None:  # in-flight reads may still hold the old backends: close them later
            old.cache.close(revoke=False)
            for backend in old.backends.values():
                with contextlib.suppress(Exception):
                    backend.close()

        timer = threading.Timer(max(old.config.drain_seconds, 1.0), retire)
        timer.daemon = True
        timer.start()
        return True

    def _dev_sync(self) -> _State:
        """``--dev``: pick up names put into the store since start-up (policy only; same backends/cache)."""
        st = self._state
        if self._dev_refresh is None:
            return st
        try:
            config = self._dev_refresh()
        except DepthguardError as exc:
            log.warning("dev store rescan failed: %s", exc)
            return st
        if set(config.secrets) == set(st.config.secrets):
            return st
        with self._reload_lock:
            st = self._state
            self._state = self._build(config, backends=st.backends, cache=st.cache)
            return self._state

    # ------------------------------------------------------------------------------ rate limits

    def _rate_limited(self, limiter: RateLimiter, limit: str, peer: PeerCred) -> RateLimited:
        self.metrics.rate_limited.inc(limit)
        now = time.monotonic()
        key = (limit, peer.uid)
        if now - self._rate_audited.get(key, -_RATE_AUDIT_EVERY) >= _RATE_AUDIT_EVERY:
            self._rate_audited[key] = now
            if len(self._rate_audited) > 10_000:
                self._rate_audited.clear()
            self.audit.record("rate.limited", "deny", reason=limit, peer=peer.audit)
        return RateLimited(limit, limiter.retry_after(peer.uid))

    def _deny(self, exc: AccessError, peer: PeerCred | None, *, event: str = "access.denied",
              role: str | None = None, secret: str | None = None) -> AccessError:
        """Record a refusal (audit + metric) and return the exception to raise. A failed
        authentication also spends the peer's auth-failure budget: past it, the answer is 429."""
        auth = isinstance(exc, Unauthorized) or exc.reason in ("uid_mismatch", "no_peer_credentials")
        if auth:
            self.metrics.token_denials.inc(exc.reason)
            if peer is not None and not self._state.auth_limiter.allow(peer.uid):
                return self._rate_limited(self._state.auth_limiter, "auth_failures", peer)
        else:
            self.metrics.access_denials.inc(exc.reason)
        self.audit.record(event, "deny", reason=exc.reason, peer=peer.audit if peer else None,
                          role=role, secret=secret)
        return exc

    # ------------------------------------------------------------------------------ requests

    def issue_token(self, peer: PeerCred | None, role: str | None) -> tuple[str, Claims]:
        """A token for the connected peer: its uid (and groups) must map to a role (``role`` picks one
        when several do). Rate-limited per uid before any signing work."""
        if peer is None:
            raise self._deny(Forbidden("no_peer_credentials", "no peer credentials on this connection"),
                             None, event="token.issue")
        st = self._state
        if not st.token_limiter.allow(peer.uid):
            self.metrics.token_denials.inc("rate_limited")
            raise self._rate_limited(st.token_limiter, "token_requests", peer)
        allowed = st.policy.roles_for(peer.uid, peer.groups)
        if role is None and len(allowed) > 1:
            raise UsageError(f"this uid may use several roles; choose one of: {', '.join(allowed)}")
        chosen = role if role is not None else (allowed[0] if allowed else None)
        if chosen is None or chosen not in allowed:
            self.metrics.token_denials.inc("role_not_allowed")
            self.audit.record("token.issue", "deny", reason="role_not_allowed", peer=peer.audit,
                              role=role)
            raise Forbidden("role_not_allowed", "this uid may not use that role")
        spec = st.policy.role(chosen)
        token, claims = self.tokens.issue(uid=peer.uid, role=chosen, scopes=st.policy.scopes(chosen),
                                          ttl=spec.token_ttl)
        self.metrics.tokens_issued.inc(chosen)
        self.audit.record("token.issue", "allow", peer=peer.audit, role=chosen, jti=claims.jti,
                          exp=claims.exp)
        return token, claims

    def authenticate(self, peer: PeerCred | None, authorization: str | None) -> Claims:
        """The verified claims of the request's ``Authorization: Bearer`` token, bound to this peer."""
        if peer is None:
            raise self._deny(Forbidden("no_peer_credentials", "no peer credentials on this connection"), None)
        if not authorization:
            missing = Unauthorized("missing_token", "an Authorization: Bearer token is required")
            raise self._deny(missing, peer)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise self._deny(Unauthorized("malformed", "expected Authorization: Bearer <token>"), peer)
        try:
            return self.tokens.verify(token.strip(), peer_uid=peer.uid)
        except AccessError as exc:
            raise self._deny(exc, peer) from None

    def _in_scope(self, st: _State, claims: Claims, name: str) -> bool:
        """The token's scopes allow ``name`` *and* so does its role as configured now (a reload that
        narrows a role takes effect for tokens already issued)."""
        if not st.policy.allows(claims.scopes, name):
            return False
        try:
            return st.policy.allows(st.policy.scopes(claims.role), name)
        except KeyError:
            return False  # the role was removed by a reload

    def list_secrets(self, claims: Claims) -> list[str]:
        st = self._dev_sync() if self._dev_refresh is not None else self._state
        return [name for name in st.policy.visible(claims.scopes) if self._in_scope(st, claims, name)]

    async def read_secret(self, claims: Claims, peer: PeerCred, name: str) -> SecretRead:
        """The value of ``name`` for a verified token. Unknown and out-of-scope names are the same 403
        (scopes cannot be probed); 404 only for an in-scope name the backend does not have; 503 when
        the backend fails and no cached value is within max staleness."""
        st, secret = self._authorize(claims, peer, name)
        value = st.cache.peek(secret.key)
        if value is None:
            backend = st.backends[secret.ref.backend]
            try:
                value = await asyncio.to_thread(st.cache.get, secret.ref, backend, refresh=secret.refresh)
            except SecretNotFound:
                raise self._deny(NotFoundInScope(), peer, role=claims.role, secret=name) from None
            except BackendError as exc:
                self.audit.record("access.denied", "deny", reason="backend_unavailable",
                                  peer=peer.audit, role=claims.role, secret=name,
                                  error=type(exc).__name__)
                raise BackendUnavailable(f"secret {name!r} is unavailable: backend {secret.ref.backend!r} "
                                         "failed and no usable cached value remains") from exc
        return self._served(claims, peer, name, secret, value)

    def read_cached(self, claims: Claims, peer: PeerCred, name: str) -> SecretRead | None:
        """``read_secret`` when the cache can answer at once, else ``None`` (then ``read_secret``
        must fetch it). Refusals are raised here exactly as ``read_secret`` raises them.

        Why a synchronous twin: a cache hit needs no I/O, so the protocol answers it inside the
        parser callback, without an asyncio task and the ASGI round trip (see ``sidecar.protocol``)."""
        st, secret = self._authorize(claims, peer, name)
        value = st.cache.peek(secret.key)
        if value is None:
            return None
        return self._served(claims, peer, name, secret, value)

    def _authorize(self, claims: Claims, peer: PeerCred, name: str) -> tuple[_State, _Secret]:
        st = self._state
        if not self._in_scope(st, claims, name):
            if self._dev_refresh is not None and name not in st.secrets:
                st = self._dev_sync()
            if not self._in_scope(st, claims, name):
                denied = Forbidden("out_of_scope", "not allowed")
                raise self._deny(denied, peer, role=claims.role, secret=name)
        return st, st.secrets[name]

    def _served(self, claims: Claims, peer: PeerCred, name: str, secret: _Secret,
                value: SecretValue) -> SecretRead:
        self.audit.record("secret.read", "allow", peer=peer.audit, role=claims.role, secret=name,
                          fingerprint=self._fingerprint(value), version=value.version)
        return SecretRead(name, value, secret.ref.backend)

    def _fingerprint(self, value: SecretValue) -> str:
        """The audit fingerprint of a value, made once per fetch (``value.origin``, set by the cache)
        instead of once per read."""
        origin = value.origin
        if origin is None:
            return self.audit.fingerprint(value.value)
        fp = self._fingerprints.get(origin)
        if fp is None:
            if len(self._fingerprints) >= _FINGERPRINT_MEMO:
                self._fingerprints.clear()
            fp = self._fingerprints[origin] = self.audit.fingerprint(value.value)
        return fp

    def revoke(self, claims: Claims, peer: PeerCred) -> None:
        self.tokens.revoke(claims.jti, claims.exp)
        self.audit.record("token.revoke", "allow", peer=peer.audit, role=claims.role, jti=claims.jti)

    # ------------------------------------------------------------------------------ operations

    def _check_health(self) -> dict[str, bool]:
        out: dict[str, bool] = {}
        for name, backend in self._state.backends.items():
            try:
                out[name] = backend.health().ok
            except Exception:  # health must answer, whatever a backend does
                out[name] = False
        return out

    async def readiness(self) -> tuple[bool, dict[str, bool]]:
        """(ready, backend → healthy): ready when every configured secret can be served, because its
        backend answers or the cache still holds it within max staleness. A cache holding anything
        at all is not enough: with its backends down and its entries past max staleness, every read
        would answer 503."""
        at, health = self._health
        if time.monotonic() - at > _HEALTH_TTL:
            health = await asyncio.to_thread(self._check_health)
            self._health = (time.monotonic(), health)
        st = self._state
        ready = all(
            health.get(s.ref.backend, False) or st.cache.servable(s.key) for s in st.secrets.values()
        )
        return ready, health


class NotFoundInScope(AccessError):
    """An in-scope name the backend does not have (HTTP 404): an access outcome, audited as a denial."""

    def __init__(self) -> None:
        super().__init__("not_found", "no such secret")
