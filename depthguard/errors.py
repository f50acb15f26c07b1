"""The project's exception tree.

Every layer raises these (chained with ``from`` when translating a third-party error); only the CLI
and the HTTP layer turn them into messages and exit or status codes. No message may contain a secret
value: callers pass names, paths and fingerprints, never values.
"""

from __future__ import annotations


class DepthguardError(Exception):
    """Root of every error depthguard raises on purpose."""


class UsageError(DepthguardError):
    """The user asked for something impossible: a bad argument, a missing path (exit code 2)."""


class ConfigError(DepthguardError):
    """A configuration file is invalid; the message names the file, the key path and the reason."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {reason}")


class BackendError(DepthguardError):
    """A secrets backend failed."""


class BackendUnavailable(BackendError):
    """The backend cannot be reached and no usable cached value remains (fail closed)."""


class BackendAuthError(BackendError):
    """The backend refused our credentials."""


class SecretNotFound(BackendError):
    """The reference names nothing in the backend."""


class LeaseExpired(BackendError):
    """A lease ran out and could not be renewed or re-issued."""


class AccessError(DepthguardError):
    """A caller is not allowed to do what it asked.

    ``reason`` is a short machine code (``expired``, ``uid_mismatch``, ``out_of_scope``…) for metrics and
    the audit trail; the message is for people and never carries a token or a secret."""

    def __init__(self, reason: str, message: str = "") -> None:
        self.reason = reason
        super().__init__(message or reason.replace("_", " "))


class Unauthorized(AccessError):
    """Missing, invalid, expired or revoked credentials (HTTP 401)."""


class Forbidden(AccessError):
    """Valid credentials, but out of scope (HTTP 403)."""


class ScanError(DepthguardError):
    """The scanner could not do its job."""


class RuleError(ScanError):
    """A rule pack entry is malformed (names the file and the rule id)."""


class SourceError(ScanError):
    """A scan target cannot be read (a missing path, a corrupt archive, not a repository)."""


class ReportError(ScanError):
    """A report could not be written, or a baseline could not be read."""
