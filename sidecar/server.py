"""Run the sidecar: a safe Unix socket, uvicorn on it with our protocol, signals, and clean shutdown.

The socket file is the first access-control layer, so it is made here rather than by uvicorn:
* its directory must exist, must not be writable by others (a world-writable directory, sticky or not,
  lets anyone pre-create or race the name), and must belong to us or root;
* it is bound under a temporary name with a 0177 umask, ``chmod``-ed to the configured mode, and only
  then ``rename``-d into place, so the public name never exists with a wider mode;
* an existing file at the path must be a socket nobody answers on (a stale one from a crash is then
  replaced by the atomic rename); a live server there, or a non-socket file, is refused.

Signals (main thread only): SIGHUP reloads the configuration in a worker thread (validated and built
first; the old one is kept on error), SIGTERM/SIGINT shut down gracefully: stop accepting, let
in-flight requests finish for up to ``drain_seconds``, close the service (lease revocation when
configured, the audit ``stop`` record), and remove the socket if it is still ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import stat
import threading
from collections.abc import Callable, Generator
from pathlib import Path

import uvicorn

from broker.audit import AuditLog
from broker.audit_sinks import AuditSink, FileSink, HttpSink, SyslogSink
from depthguard.errors import ConfigError
from sidecar.app import HotPath, create_app
from sidecar.config import SidecarConfig
from sidecar.metrics import SidecarMetrics
from sidecar.protocol import make_protocol
from sidecar.service import Broker

__all__ = ["SidecarServer", "bind_unix_socket", "build_audit", "check_socket_dir"]

log = logging.getLogger(__name__)

_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


def _refuse(path: Path, reason: str) -> ConfigError:
    return ConfigError(str(path), "listen.socket", reason)


def check_socket_dir(path: Path) -> None:
    """Refuse a socket path whose directory others could tamper with (see the module docstring)."""
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise _refuse(path, f"path is longer than {_SUN_PATH_MAX} bytes (a Unix socket limit)")
    parent = path.parent
    try:
        st = os.stat(parent)
    except FileNotFoundError:
        raise _refuse(path, f"directory {parent} does not exist") from None
    except OSError as exc:
        raise _refuse(path, f"cannot inspect directory {parent}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, f"{parent} is not a directory")
    if st.st_mode & stat.S_IWOTH:
        sticky = " (even with the sticky bit)" if st.st_mode & stat.S_ISVTX else ""
        raise _refuse(path, f"directory {parent} is world-writable{sticky}: use a directory only the "
                            "sidecar's user can write, e.g. /run/depthguard (mode 0750 or 0755)")
    if st.st_uid not in (os.geteuid(), 0):
        raise _refuse(path, f"directory {parent} belongs to uid {st.st_uid}, not to us or root")


def _clear_stale(path: Path) -> None:
    """Allow binding over ``path`` only if it is absent or a socket nobody listens on."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise _refuse(path, "exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.warning("replacing stale socket %s (nothing listens on it)", path)
        return
    except OSError as exc:
        reason = f"exists and cannot be probed ({exc.strerror or exc}); refusing to replace it"
        raise _refuse(path, reason) from None
    finally:
        probe.close()
    raise _refuse(path, "another server is already listening on this socket")


_umask_lock = threading.Lock()


FileId = tuple[int, int, int]
"""(device, inode, ctime ns): inode numbers alone are reused as soon as a file is deleted."""


def _file_id(path: Path) -> FileId:
    st = os.lstat(path)
    return st.st_dev, st.st_ino, st.st_ctime_ns


def bind_unix_socket(path: Path, mode: int, backlog: int = 2048) -> tuple[socket.socket, FileId]:
    """Create the listening socket at ``path`` with ``mode`` (see the module docstring).

    Returns the socket and its file's identity (so shutdown removes the file only if it is ours)."""
    check_socket_dir(path)
    _clear_stale(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    if len(os.fsencode(tmp)) > _SUN_PATH_MAX:
        raise _refuse(path, "path is too long for the temporary name used to create it safely")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Security: the temporary name must never be connectable by others, whatever our umask is.
        with _umask_lock:
            old = os.umask(0o177)
            try:
                sock.bind(str(tmp))
            finally:
                os.umask(old)
        try:
            os.chmod(tmp, mode)
            sock.listen(backlog)
            os.rename(tmp, path)  # atomic; replaces a stale socket file
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        sock.close()
        raise _refuse(path, f"cannot create socket: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise
    return sock, _file_id(path)


def _remove_if_ours(path: Path, ours: FileId) -> None:
    with contextlib.suppress(OSError):
        if _file_id(path) == ours:
            os.unlink(path)


def build_audit(config: SidecarConfig) -> AuditLog:
    """The audit log and its sinks from ``audit:`` (file, then the remote copy)."""
    ac = config.audit
    sinks: list[AuditSink] = []
    if ac.file is not None:
        ac.file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        sinks.append(FileSink(ac.file))
    if ac.remote is not None:
        remote = ac.remote
        assert remote.spool is not None  # AuditConfig fills in the default
        if remote.type == "http":
            assert remote.url is not None
            sinks.append(HttpSink(remote.url, remote.spool, remote.spool_max_bytes))
        else:
            assert remote.address is not None
            sinks.append(SyslogSink(remote.address, remote.spool, remote.spool_max_bytes))
    if not sinks:
        log.warning("audit: no file and no remote configured; audit records are discarded")
    key = None
    if ac.hmac_key_file is not None:
        try:
            key = ac.hmac_key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(config.source, "audit.hmac_key_file", exc.strerror or str(exc)) from None
        if len(key) < 16:
            raise ConfigError(config.source, "audit.hmac_key_file", "key must be at least 16 bytes")
    return AuditLog(sinks, heartbeat=ac.heartbeat, hmac_key=key,
                    instance=f"{socket.gethostname()}:{config.listen.socket}")


class _Uvicorn(uvicorn.Server):
    """uvicorn's server with our signal handling: SIGHUP reloads, and SIGTERM/SIGINT are not re-raised
    after shutdown (uvicorn re-raises them, which would kill us before the socket is removed)."""

    def __init__(
        self, config: uvicorn.Config, on_hup: Callable[[], None], on_started: Callable[[], None]
    ) -> None:
        super().__init__(config)
        self._on_hup = on_hup
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        loop.add_signal_handler(signal.SIGTERM, self._exit)
        loop.add_signal_handler(signal.SIGINT, self._exit)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        try:
            yield
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    def _exit(self) -> None:
        if self.should_exit:
            self.force_exit = True  # a second signal: stop draining
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


class SidecarServer:
    """One sidecar instance: builds the service and app, serves until stopped, then cleans up.

    ``load`` re-reads the configuration on SIGHUP (``reload``); ``dev_refresh`` is ``--dev``'s store
    rescan. ``serve`` blocks; from another thread, ``stop``/``reload`` and the ``ready`` event work."""

    def __init__(
        self,
        config: SidecarConfig,
        *,
        load: Callable[[], SidecarConfig] | None = None,
        dev_refresh: Callable[[], SidecarConfig] | None = None,
    ) -> None:
        check_socket_dir(config.listen.socket)  # before keys, backends and audit files are touched
        self.config = config
        self._load = load
        self.ready = threading.Event()
        self.service = Broker(config, audit=build_audit(config), metrics=SidecarMetrics(),
                              dev_refresh=dev_refresh)
        self.app = create_app(self.service)
        self._uvicorn: _Uvicorn | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def socket_path(self) -> Path:
        return self.config.listen.socket

    def reload(self) -> None:
        """Reload the configuration in a worker thread (safe from a signal handler or another thread)."""
        if self._load is None:
            log.warning("reload requested but there is no configuration file to re-read")
            return
        threading.Thread(target=self.service.reload, args=(self._load,), name="depthguard-reload",
                         daemon=True).start()

    def stop(self) -> None:
        """Begin a graceful shutdown (thread-safe)."""
        server = self._uvicorn
        if server is not None:
            server.should_exit = True

    def serve(self) -> None:
        """Bind, serve until SIGTERM/SIGINT or ``stop()``, then drain and clean up."""
        listen = self.config.listen
        sock, ours = bind_unix_socket(listen.socket, listen.mode)
        try:
            hot = HotPath(self.app, self.service)
            uv_config = uvicorn.Config(
                hot,
                http=make_protocol(self.service.limits, hot),
                loop="uvloop",
                lifespan="off",
                log_config=None,
                access_log=False,
                server_header=False,
                proxy_headers=False,  # a Unix socket has no proxy in front: never trust X-Forwarded-*
                date_header=False,
                timeout_keep_alive=30,
                timeout_graceful_shutdown=int(max(self.config.drain_seconds, 1)),
            )
            self._uvicorn = _Uvicorn(uv_config, on_hup=self.reload, on_started=self.ready.set)
            self.service.start()
            try:
                self._uvicorn.run(sockets=[sock])
            finally:
                _remove_if_ours(listen.socket, ours)
                self.service.close()
        finally:
            sock.close()
            _remove_if_ours(listen.socket, ours)
