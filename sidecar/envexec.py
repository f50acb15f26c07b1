"""``depthguard sidecar exec``: start a program with its secrets in environment variables.

For applications that only read env vars. It waits until *every* configured secret can be read (a pod's
backend is often not reachable for the first seconds), then starts the program with the parent's
environment plus one variable per secret (``SecretConfig.env``), stays in front of it as a minimal init
(forwarding SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 so an orchestrator's stop reaches the
app), and returns the program's exit code (``128 + N`` when signal N killed it, as shells report).

Values are read into the child's environment only: never printed, logged, or put in a message.
Leases are not renewed after the start (the process holding them is the child; restart it to get fresh
credentials), and they are not revoked when we let go of the cache, since the child is using them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from types import FrameType

from broker.backends.interface import SecretBackend, SecretValue
from broker.cache import SecretCache
from depthguard.errors import BackendError, BackendUnavailable, UsageError
from sidecar.config import SidecarConfig, build_backends

__all__ = ["FORWARDED_SIGNALS", "fetch_all", "run_with_secrets"]

FORWARDED_SIGNALS = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
)
_FIRST_DELAY = 0.1
_MAX_DELAY = 2.0


def fetch_all(
    cfg: SidecarConfig, cache: SecretCache, backends: dict[str, SecretBackend], *, timeout: float
) -> dict[str, SecretValue]:
    """Read every configured secret, retrying the missing ones with exponential backoff until
    ``timeout``; then raise ``BackendUnavailable`` naming each secret still missing and why (error
    class and message: backends never put values in messages)."""
    deadline = time.monotonic() + timeout
    values: dict[str, SecretValue] = {}
    failures: dict[str, BackendError] = {}
    delay = _FIRST_DELAY
    while True:
        for name, spec in cfg.secrets.items():
            if name in values:
                continue
            ref = spec.secret_ref
            try:
                values[name] = cache.get(ref, backends[ref.backend], refresh=spec.refresh)
            except BackendError as exc:  # incl. SecretNotFound: it may be created while we wait
                failures[name] = exc
            else:
                failures.pop(name, None)
        remaining = deadline - time.monotonic()
        if not failures:
            return values
        if remaining <= 0:
            missing = "; ".join(f"{n} ({type(e).__name__}: {e})" for n, e in failures.items())
            raise BackendUnavailable(
                f"{len(failures)} of {len(cfg.secrets)} secrets not available after {timeout:g} s: {missing}"
            )
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, _MAX_DELAY)


def _child_env(cfg: SidecarConfig, values: dict[str, SecretValue]) -> dict[bytes, bytes]:
    env = dict(os.environb)
    for name, got in values.items():
        if b"\0" in got.value:
            raise UsageError(f"secret {name!r} contains a NUL byte: it cannot be an environment variable")
        env[cfg.env_name(name).encode()] = got.value
    return env


def run_with_secrets(cfg: SidecarConfig, argv: Sequence[str], *, timeout: float = 60.0) -> int:
    """Fetch every secret (waiting up to ``timeout`` seconds), run ``argv`` with them in its
    environment, forward signals to it, and return its exit code (``128 + N`` if killed by signal N).

    Signal forwarding needs the main thread (Python's rule for ``signal.signal``); called from another
    thread, the child is still run but signals are not forwarded."""
    if not argv:
        raise UsageError("no command given (use: depthguard sidecar exec --config FILE -- CMD ARGS...)")
    backends = build_backends(cfg)
    cache = SecretCache(cfg.cache_policy())
    try:
        values = fetch_all(cfg, cache, backends, timeout=timeout)
    finally:
        cache.close(revoke=False)  # never revoke: the child is about to use these credentials
        for backend in backends.values():
            backend.close()
    env = _child_env(cfg, values)
    del values
    return _spawn_and_wait(list(argv), env)


def _spawn_and_wait(argv: list[str], env: dict[bytes, bytes]) -> int:
    proc: subprocess.Popen[bytes] | None = None
    pending: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if proc is None:
            pending.append(signum)  # arrived between installing handlers and the spawn
        elif proc.returncode is None:
            proc.send_signal(signum)

    forwarding = threading.current_thread() is threading.main_thread()
    previous: dict[int, signal._HANDLER] = {}
    # Order matters: handlers go in before the spawn, so a stop signal arriving meanwhile is neither
    # lost nor fatal to us (which would orphan the child). The child starts with default dispositions:
    # exec resets caught signals.
    if forwarding:
        for sig in FORWARDED_SIGNALS:
            previous[sig] = signal.signal(sig, forward)
    try:
        try:
            proc = subprocess.Popen(argv, env=env)
        except FileNotFoundError:
            raise UsageError(f"command not found: {argv[0]}") from None
        except PermissionError:
            raise UsageError(f"command not executable: {argv[0]}") from None
        except OSError as exc:
            raise UsageError(f"cannot run {argv[0]}: {exc.strerror}") from None
        finally:
            env.clear()
        for early in pending:
            proc.send_signal(early)
        returncode = proc.wait()  # PEP 475: retried after each handler runs
    finally:
        for old_sig, handler in previous.items():
            signal.signal(old_sig, handler)
    return 128 - returncode if returncode < 0 else returncode
