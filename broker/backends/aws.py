"""AWS backends: Secrets Manager (``aws:NAME[#KEY][@STAGE|@VERSION_ID]``) and SSM Parameter Store
(``aws-ssm:/PATH[:N][#KEY][@N|@LABEL]``).

Why this module exists: it is the only place that talks to boto3/botocore, so it is the only place
that knows their exceptions. Every botocore error is translated here (``_map_errors``) into the
project's ``BackendError`` family, chained with ``from``; nothing above this module sees a botocore
type. Messages name the backend, the reference and the AWS error code, never a value.

It must never log or put into a message a secret value, nor the text of an AWS error message
(which is free-form and could echo request content); only error *codes* are reported.

boto3 is untyped: ``Any`` stays at this boundary, and every value leaving it is one of ours.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Self

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import CredentialProvider, CredentialResolver, DeferredRefreshableCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from depthguard.errors import ConfigError

from .interface import (
    BackendAuthError,
    BackendError,
    BackendUnavailable,
    Health,
    SecretBackend,
    SecretNotFound,
    SecretRef,
    SecretValue,
)

__all__ = ["AwsSecretsManagerBackend", "AwsSsmBackend"]

# ---- error translation ---------------------------------------------------------------------------

_NOT_FOUND_CODES = frozenset(
    {
        "ResourceNotFoundException",  # Secrets Manager: no such secret, or no such version/stage
        "ParameterNotFound",
        "ParameterVersionNotFound",
        "ParameterVersionLabelNotFound",
    }
)
_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClient",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSignature",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "AuthFailure",
        "NotAuthorized",
        # KMS refused to decrypt for us: in practice a key-policy / grant problem, i.e. our identity.
        "DecryptionFailure",
        "KMSAccessDeniedException",
    }
)
_UNAVAILABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServiceError",
        "InternalServerError",
        "InternalErrorException",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


@contextmanager
def _map_errors(what: str) -> Iterator[None]:
    """Translate botocore exceptions raised inside the block into the ``BackendError`` family.

    ``what`` names the backend and reference (or operation) for the message. Retries have already
    happened inside botocore (adaptive mode) by the time an error reaches us, so throttling here is
    final for this call and reported as ``BackendUnavailable``.
    """
    try:
        yield
    except ClientError as exc:
        response: Mapping[str, Any] = exc.response or {}
        code = str(response.get("Error", {}).get("Code", "") or "")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        detail = f"{what}: AWS error {code or 'unknown'}" + (f" (HTTP {status})" if status else "")
        if code in _NOT_FOUND_CODES:
            raise SecretNotFound(f"{what}: not found ({code})") from exc
        if code in _AUTH_CODES or status in (401, 403):
            raise BackendAuthError(detail) from exc
        if code in _UNAVAILABLE_CODES or (isinstance(status, int) and status >= 500) or status == 429:
            raise BackendUnavailable(detail) from exc
        raise BackendError(detail) from exc
    except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as exc:
        raise BackendAuthError(f"{what}: no usable AWS credentials ({type(exc).__name__})") from exc
    except (BotoConnectionError, HTTPClientError) as exc:
        # Endpoint unreachable, connection refused/reset/closed, connect or read timeout, proxy errors.
        raise BackendUnavailable(f"{what}: AWS endpoint unreachable ({type(exc).__name__})") from exc
    except BotoCoreError as exc:
        raise BackendError(f"{what}: AWS client error ({type(exc).__name__})") from exc


# ---- credentials ---------------------------------------------------------------------------------


class _AssumeRoleProvider(CredentialProvider):  # type: ignore[misc]  # botocore is untyped
    """Credentials from STS AssumeRole, re-assumed by botocore before they expire.

    ``RefreshableCredentials`` refreshes in the background window (15 min before expiry) and blocks
    for a refresh in the mandatory window (10 min), so a long-running sidecar never presents expired
    role credentials. The source credentials come from the default chain of a separate session.
    """

    METHOD = "depthguard-assume-role"
    CANONICAL_NAME = "depthguard-assume-role"

    def __init__(self, sts_client: Any, params: Mapping[str, Any]) -> None:
        super().__init__()
        self._sts = sts_client
        self._params = dict(params)
        self.refresh_count = 0
        """How often AssumeRole was called (observability and tests; no credential material)."""

    def _fetch(self) -> dict[str, str]:
        resp: Any = self._sts.assume_role(**self._params)
        creds: Any = resp["Credentials"]
        expiry: Any = creds["Expiration"]
        self.refresh_count += 1
        return {
            "access_key": str(creds["AccessKeyId"]),
            "secret_key": str(creds["SecretAccessKey"]),
            "token": str(creds["SessionToken"]),
            "expiry_time": expiry.isoformat() if isinstance(expiry, datetime) else str(expiry),
        }

    def load(self) -> Any:
        # Deferred: the first AssumeRole happens on the first request, inside ``_map_errors``, so a
        # sidecar can start (and serve from cache) while STS is unreachable.
        return DeferredRefreshableCredentials(refresh_using=self._fetch, method=self.METHOD)


def _build_session(
    *,
    name: str,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
    sts_endpoint_url: str | None,
    config: Config,
    assume_role_arn: str | None,
    role_session_name: str | None,
    external_id: str | None,
    duration_seconds: int | None,
) -> tuple[boto3.session.Session, _AssumeRoleProvider | None]:
    """A boto3 session with the default credential chain, or one whose only credential source is
    a refreshing AssumeRole of the role in the config."""
    base = boto3.session.Session(region_name=region, profile_name=profile)
    if not assume_role_arn:
        return base, None
    params: dict[str, Any] = {
        "RoleArn": assume_role_arn,
        "RoleSessionName": role_session_name or f"depthguard-{name}",
    }
    if external_id:
        params["ExternalId"] = external_id
    if duration_seconds:
        params["DurationSeconds"] = int(duration_seconds)
    sts = base.client("sts", endpoint_url=sts_endpoint_url or endpoint_url, config=config)
    provider = _AssumeRoleProvider(sts, params)
    core = botocore.session.get_session()
    core.register_component("credential_provider", CredentialResolver(providers=[provider]))
    session = boto3.session.Session(botocore_session=core, region_name=base.region_name)
    return session, provider


# ---- shared base ---------------------------------------------------------------------------------

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _select_key(what: str, text: str, key: str) -> bytes:
    """One field of a JSON object. Strings are returned as their UTF-8 bytes; other JSON values
    (numbers, booleans, nested objects) as compact JSON, so a caller always gets bytes."""
    try:
        doc: Any = json.loads(text)
    except ValueError:
        # Never include the text or the decoder's message: both can quote the value.
        raise SecretNotFound(f"{what}: value is not JSON, so it has no field {key!r}") from None
    if not isinstance(doc, dict):
        raise SecretNotFound(f"{what}: value is not a JSON object, so it has no field {key!r}")
    if key not in doc:
        raise SecretNotFound(f"{what}: no field {key!r}")
    field = doc[key]
    if isinstance(field, str):
        return field.encode("utf-8")
    return json.dumps(field, separators=(",", ":"), sort_keys=True).encode("utf-8")


class _AwsBackend(SecretBackend):
    """What both AWS backends share: session, credentials, retry/timeout config, one client.

    The client is built once: boto3 clients are thread-safe (sessions are not), which gives the
    thread safety ``SecretBackend`` requires without a lock.
    """

    _service: str = ""

    def __init__(
        self,
        name: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        profile: str | None = None,
        assume_role_arn: str | None = None,
        role_session_name: str | None = None,
        external_id: str | None = None,
        duration_seconds: int | None = None,
        sts_endpoint_url: str | None = None,
        max_attempts: int = 5,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.endpoint_url = endpoint_url
        # Adaptive retries: botocore backs off and rate-limits client-side on throttling, so a burst
        # of refreshes does not turn into a throttling storm against the account's API quota.
        self._config = Config(
            region_name=region,
            retries={"mode": "adaptive", "max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            user_agent_extra="depthguard",
        )
        what = f"{name}: creating {self._service} client"
        try:
            with _map_errors(what):
                session, self._role_provider = _build_session(
                    name=name,
                    region=region,
                    profile=profile,
                    endpoint_url=endpoint_url,
                    sts_endpoint_url=sts_endpoint_url,
                    config=self._config,
                    assume_role_arn=assume_role_arn,
                    role_session_name=role_session_name,
                    external_id=external_id,
                    duration_seconds=duration_seconds,
                )
                self._session = session
                self._client: Any = session.client(
                    self._service, endpoint_url=endpoint_url, config=self._config
                )
        except BackendError as exc:
            if isinstance(exc.__cause__, NoRegionError):
                raise ConfigError("", f"backends.{name}.region", "no AWS region configured") from exc
            raise
        self._closed = threading.Event()

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> Self:
        """Build from a config mapping (``backends.NAME`` minus ``type``); unknown keys are rejected
        with the key path, as design.md requires of the config."""
        allowed = {
            "region",
            "endpoint_url",
            "profile",
            "assume_role_arn",
            "role_session_name",
            "external_id",
            "duration_seconds",
            "sts_endpoint_url",
            "max_attempts",
            "connect_timeout",
            "read_timeout",
        }
        opts = {k: v for k, v in options.items() if k != "type"}
        for key in opts:
            if key not in allowed:
                raise ConfigError("", f"backends.{name}.{key}", "unknown key for an AWS backend")
        return cls(name, **opts)

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        with _map_errors(what):
            return fn(**kwargs)

    def credentials(self) -> Any:
        """The botocore credentials object in use (``RefreshableCredentials`` with a role)."""
        return self._session.get_credentials()

    @property
    def role_refresh_count(self) -> int:
        """How many times the role was assumed (0 without ``assume_role_arn``)."""
        return self._role_provider.refresh_count if self._role_provider else 0

    def _health_call(self) -> None:
        """One cheap authenticated call; subclasses pick it."""
        raise NotImplementedError

    def health(self) -> Health:
        try:
            self._health_call()
        except BackendError as exc:
            return Health(False, str(exc))
        return Health(True, f"{self._service} reachable")

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            close: Any = getattr(self._client, "close", None)
            if close is not None:
                close()


# ---- Secrets Manager -----------------------------------------------------------------------------


class AwsSecretsManagerBackend(_AwsBackend):
    """``aws:NAME_OR_ARN[#KEY][@VERSION]``.

    ``@VERSION`` is a version id when it is UUID-shaped (what Secrets Manager generates and what
    ``ClientRequestToken`` usually is), otherwise a staging label (``AWSCURRENT``, ``AWSPREVIOUS``,
    ``AWSPENDING`` or a custom label). Without a version we ask for ``AWSCURRENT`` explicitly: the
    same as AWS's default, and robust against emulators that get the default wrong after a stage move.
    """

    _service = "secretsmanager"

    def read(self, ref: SecretRef) -> SecretValue:
        what = f"{self.name}: {ref}"
        kwargs: dict[str, Any] = {"SecretId": ref.path}
        if ref.version and _UUID.match(ref.version):
            kwargs["VersionId"] = ref.version
        else:
            kwargs["VersionStage"] = ref.version or "AWSCURRENT"
        resp: Any = self._call(what, self._client.get_secret_value, **kwargs)
        version = resp.get("VersionId")
        version_str = str(version) if version is not None else None
        if resp.get("SecretString") is not None:
            text = str(resp["SecretString"])
            value = _select_key(what, text, ref.key) if ref.key else text.encode("utf-8")
        elif resp.get("SecretBinary") is not None:
            if ref.key:
                raise SecretNotFound(f"{what}: binary secret has no field {ref.key!r}")
            value = bytes(resp["SecretBinary"])
        else:
            raise SecretNotFound(f"{what}: the version holds no value")
        return SecretValue(value, version=version_str)

    def _health_call(self) -> None:
        self._call(f"{self.name}: health", self._client.list_secrets, MaxResults=1)


# ---- SSM Parameter Store -------------------------------------------------------------------------


class AwsSsmBackend(_AwsBackend):
    """``aws-ssm:/PATH[#KEY][@N|@LABEL]`` or ``aws-ssm:/PATH:N`` (SSM's own ``name:version`` form).

    Always ``WithDecryption=True``: a SecureString is useless to the broker encrypted, and the
    plaintext never leaves this process except to an authorised caller. ``#KEY`` selects a field of a
    JSON value, like Secrets Manager. The version reported is the parameter's version number.
    """

    _service = "ssm"

    @staticmethod
    def _has_selector(path: str) -> bool:
        # Parameter names cannot contain ':'; an ARN can, but not in its last '/' segment.
        return ":" in path.rsplit("/", 1)[-1]

    def read(self, ref: SecretRef) -> SecretValue:
        what = f"{self.name}: {ref}"
        name = ref.path
        if ref.version:
            if self._has_selector(name):
                raise ConfigError("", "ref", f"{ref}: give the version either as ':N' or as '@N', not both")
            name = f"{name}:{ref.version}"
        resp: Any = self._call(what, self._client.get_parameter, Name=name, WithDecryption=True)
        param: Any = resp["Parameter"]
        text = str(param.get("Value", ""))
        value = _select_key(what, text, ref.key) if ref.key else text.encode("utf-8")
        version = param.get("Version")
        return SecretValue(value, version=str(version) if version is not None else None)

    def _health_call(self) -> None:
        self._call(f"{self.name}: health", self._client.describe_parameters, MaxResults=1)
