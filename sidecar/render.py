"""Render a secret into a file an application mounts (``secrets.NAME.render``), then tell it to reload.

Why this shape: applications that only read files (TLS servers, nginx, database clients) must never see
a half-written or briefly world-readable secret. So the file is written to a temp file in the same
directory, chmod-ed to its final mode *before* any byte of the secret is written, fsync-ed, renamed over
the target (atomic on POSIX), and the directory is fsync-ed so the rename survives a crash. Rewriting an
unchanged file would wake the app's reload for nothing, so nothing is written when the bytes (and mode)
on disk already match.

The directory must exist and must not be world-writable unless sticky (``/tmp``-like): in a directory
anyone can write, anyone can swap the file the app reads.

Reload problems (missing pidfile, dead process, failing command) are *warnings*: the file is already
correct on disk, and the app will pick it up on its next start. They are returned by ``reload()``, kept in
``Renderer.last_warning`` and logged (paths, pids and exit codes only).

This module never logs, formats or raises with a secret value.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import stat
import string
import subprocess
import tempfile
from pathlib import Path

from broker.backends.interface import SecretValue
from depthguard.errors import BackendError, ConfigError
from depthguard.fsutil import fsync_dir
from sidecar.config import RenderConfig

__all__ = ["RELOAD_TIMEOUT", "Renderer", "render_bytes"]

log = logging.getLogger(__name__)

RELOAD_TIMEOUT = 30.0
"""Seconds a reload command may run before it is killed."""


def render_bytes(name: str, spec: RenderConfig, value: SecretValue) -> bytes:
    """The file content: the raw value, or the template with ``${value}`` (UTF-8, undecodable bytes
    kept via surrogateescape so they round-trip exactly), ``${name}`` and ``${version}``."""
    if spec.template is None:
        return value.value
    text = string.Template(spec.template).substitute(
        value=value.value.decode("utf-8", "surrogateescape"),
        name=name,
        version=value.version or "",
    )
    return text.encode("utf-8", "surrogateescape")


class Renderer:
    """Keeps one ``render:`` target up to date. Not thread-safe: call ``render`` from one thread (the
    sidecar's rotation loop) per target."""

    def __init__(self, name: str, spec: RenderConfig, *, reload_timeout: float = RELOAD_TIMEOUT) -> None:
        self.name = name
        self.spec = spec
        self.path = spec.path
        self.reload_timeout = reload_timeout
        self.last_warning: str | None = None
        """The last reload problem (``None`` after a clean reload or before any)."""

    def __repr__(self) -> str:
        return f"Renderer({self.name!r}, {str(self.path)!r})"

    @property
    def _key(self) -> str:
        return f"secrets.{self.name}.render.path"

    def check_directory(self) -> None:
        """Refuse a missing directory or one that others can write without the sticky bit."""
        directory = self.path.parent
        try:
            st = directory.stat()
        except FileNotFoundError:
            raise ConfigError("", self._key, f"directory {directory} does not exist") from None
        except OSError as exc:
            raise ConfigError("", self._key, f"cannot use directory {directory}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError("", self._key, f"{directory} is not a directory")
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            # Security: anyone could replace or pre-create the rendered file in such a directory.
            raise ConfigError(
                "", self._key,
                f"directory {directory} is world-writable without the sticky bit; "
                "render into a directory only the sidecar (and its group) can write",
            )

    def _unchanged(self, content: bytes) -> bool:
        """Whether the target already holds exactly ``content`` with the configured mode."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise BackendError(f"secrets.{self.name}: cannot stat {self.path}: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError("", self._key, f"{self.path} is a directory")
        if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != self.spec.mode:
            return False
        if st.st_size != len(content):
            return False
        try:
            with open(self.path, "rb") as fh:
                current = fh.read()
        except OSError:
            return False  # unreadable (e.g. a mode without owner read): rewrite it
        return hmac.compare_digest(current, content)

    def _write(self, content: bytes) -> None:
        directory = self.path.parent
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise BackendError(
                f"secrets.{self.name}: cannot create a file in {directory}: {exc.strerror}"
            ) from None
        try:
            # Order matters: the final mode is set while the file is still empty, so the secret is
            # never readable under mkstemp's mode or a umask-derived one.
            os.fchmod(fd, self.spec.mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            fsync_dir(directory)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise BackendError(
                    f"secrets.{self.name}: cannot write {self.path}: {exc.strerror}"
                ) from None
            raise

    def render(self, value: SecretValue) -> bool:
        """Write the file if its content (or mode) differs, then run the reload action. Returns whether
        it wrote. Raises ``ConfigError`` for an unusable directory, ``BackendError`` for I/O failures;
        reload problems are only warnings (``last_warning``)."""
        self.check_directory()
        content = render_bytes(self.name, self.spec, value)
        if self._unchanged(content):
            return False
        self._write(content)
        if self.spec.reload is not None:
            self.last_warning = self.reload()
        return True

    def reload(self) -> str | None:
        """Run the configured reload action; return a warning (and log it) instead of raising."""
        warning = self._reload()
        if warning is not None:
            log.warning("secrets.%s: reload after rendering %s: %s", self.name, self.path, warning)
        return warning

    def _reload(self) -> str | None:
        action = self.spec.reload
        if action is None:
            return None
        if action.pidfile is not None:
            return self._signal(action.pidfile, action.signum)
        assert action.command is not None  # ReloadConfig guarantees exactly one action
        return self._run(action.command)

    def _signal(self, pidfile: Path, signum: int) -> str | None:
        try:
            text = pidfile.read_text(encoding="ascii", errors="replace").strip()
        except FileNotFoundError:
            return f"pidfile {pidfile} does not exist"
        except OSError as exc:
            return f"cannot read pidfile {pidfile}: {exc.strerror}"
        # Security: pid 0 and negative pids would signal a whole process group (or every process).
        if not text.isdigit() or int(text) <= 0:
            return f"pidfile {pidfile} does not hold a process id"
        pid = int(text)
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return f"no process {pid} (from {pidfile})"
        except PermissionError:
            return f"not allowed to signal process {pid} (from {pidfile})"
        return None

    def _run(self, argv: list[str]) -> str | None:
        try:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                timeout=self.reload_timeout, check=False,
            )
        except FileNotFoundError:
            return f"reload command not found: {argv[0]}"
        except PermissionError:
            return f"reload command not executable: {argv[0]}"
        except subprocess.TimeoutExpired:
            return f"reload command {argv[0]} did not finish within {self.reload_timeout:g} s (killed)"
        except OSError as exc:
            return f"reload command {argv[0]} could not run: {exc.strerror}"
        if done.returncode != 0:
            return f"reload command {argv[0]} exited with {done.returncode}"
        return None
