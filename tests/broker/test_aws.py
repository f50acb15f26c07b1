"""AWS backends against a real AWS API over HTTP: moto's server, or LocalStack when
``DEPTHGUARD_TEST_AWS_ENDPOINT`` is set. Real boto3 clients on both sides, nothing patched.

Each test uses fresh, unique names, so the session-wide server needs no cleanup and the tests can
be re-run against a long-lived LocalStack.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from broker.backends.aws import AwsSecretsManagerBackend, AwsSsmBackend, _map_errors
from broker.backends.interface import (
    BackendAuthError,
    BackendError,
    BackendUnavailable,
    SecretNotFound,
    SecretRef,
)
from depthguard.errors import ConfigError
from tests.broker.aws_server import REGION, aws_endpoint

__all__ = ["aws_endpoint"]  # the fixture, re-exported so pytest finds it in this module

VALUE = "sk_live_do-not-leak-0123456789"


def _uid() -> str:
    return uuid.uuid4().hex[:12]


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION)


@pytest.fixture
def sm(aws_endpoint: str) -> Iterator[AwsSecretsManagerBackend]:
    backend = AwsSecretsManagerBackend("aws", region=REGION, endpoint_url=aws_endpoint, max_attempts=2)
    yield backend
    backend.close()


@pytest.fixture
def ssm(aws_endpoint: str) -> Iterator[AwsSsmBackend]:
    backend = AwsSsmBackend("aws-ssm", region=REGION, endpoint_url=aws_endpoint, max_attempts=2)
    yield backend
    backend.close()


def _no_leak(exc: BaseException, *values: str) -> None:
    """Neither the message nor anything it chains from may carry a value."""
    seen: BaseException | None = exc
    while seen is not None:
        for v in (VALUE, *values):
            assert v not in str(seen)
        seen = seen.__cause__ or seen.__context__


# ---- Secrets Manager ------------------------------------------------------------------------------


@pytest.mark.integration
def test_json_key_and_whole_value(aws_endpoint: str, sm: AwsSecretsManagerBackend) -> None:
    name = f"prod/stripe-{_uid()}"
    created = _client("secretsmanager", aws_endpoint).create_secret(
        Name=name, SecretString=f'{{"api_key": "{VALUE}", "port": 5432, "tls": true}}'
    )
    got = sm.read(SecretRef.parse(f"aws:{name}#api_key"))
    assert got.value == VALUE.encode()
    assert got.version == created["VersionId"]
    assert VALUE not in repr(got)
    assert sm.read(SecretRef.parse(f"aws:{name}#port")).value == b"5432"
    assert sm.read(SecretRef.parse(f"aws:{name}#tls")).value == b"true"
    assert b'"api_key"' in sm.read(SecretRef.parse(f"aws:{name}")).value

    with pytest.raises(SecretNotFound) as info:
        sm.read(SecretRef.parse(f"aws:{name}#nope"))
    assert "nope" in str(info.value)
    _no_leak(info.value)


@pytest.mark.integration
def test_key_of_non_json_secret_is_not_found_without_leaking(
    aws_endpoint: str, sm: AwsSecretsManagerBackend
) -> None:
    name = f"plain-{_uid()}"
    _client("secretsmanager", aws_endpoint).create_secret(Name=name, SecretString=VALUE)
    assert sm.read(SecretRef.parse(f"aws:{name}")).value == VALUE.encode()
    with pytest.raises(SecretNotFound) as info:
        sm.read(SecretRef.parse(f"aws:{name}#api_key"))
    _no_leak(info.value)


@pytest.mark.integration
def test_stage_labels_and_version_ids(aws_endpoint: str, sm: AwsSecretsManagerBackend) -> None:
    client = _client("secretsmanager", aws_endpoint)
    name = f"prod/rotating-{_uid()}"
    v1, v2, v3 = (str(uuid.uuid4()) for _ in range(3))
    client.create_secret(Name=name, SecretString='{"api_key": "one"}', ClientRequestToken=v1)
    # Rotate with PutSecretValue: moves AWSCURRENT to v2 and AWSPREVIOUS to v1 on AWS, moto and LocalStack.
    client.put_secret_value(SecretId=name, SecretString='{"api_key": "two"}', ClientRequestToken=v2)
    client.put_secret_value(
        SecretId=name, SecretString='{"api_key": "three"}', ClientRequestToken=v3, VersionStages=["CANARY"]
    )

    def read(text: str) -> tuple[bytes, str | None]:
        got = sm.read(SecretRef.parse(text))
        return got.value, got.version

    assert read(f"aws:{name}#api_key") == (b"two", v2)
    assert read(f"aws:{name}#api_key@AWSCURRENT") == (b"two", v2)
    assert read(f"aws:{name}#api_key@AWSPREVIOUS") == (b"one", v1)
    assert read(f"aws:{name}#api_key@CANARY") == (b"three", v3)
    assert read(f"aws:{name}#api_key@{v1}") == (b"one", v1)
    assert read(f"aws:{name}@{v3}") == (b'{"api_key": "three"}', v3)

    with pytest.raises(SecretNotFound):
        sm.read(SecretRef.parse(f"aws:{name}@NO-SUCH-STAGE"))
    with pytest.raises(SecretNotFound):
        sm.read(SecretRef.parse(f"aws:{name}@{uuid.uuid4()}"))


@pytest.mark.integration
def test_binary_secret_is_returned_as_bytes(aws_endpoint: str, sm: AwsSecretsManagerBackend) -> None:
    name = f"tls/key-{_uid()}"
    blob = b"\x00\x01\xfe\xffbinary\x80"
    created = _client("secretsmanager", aws_endpoint).create_secret(Name=name, SecretBinary=blob)
    got = sm.read(SecretRef.parse(f"aws:{name}"))
    assert got.value == blob
    assert got.version == created["VersionId"]
    with pytest.raises(SecretNotFound):
        sm.read(SecretRef.parse(f"aws:{name}#field"))


@pytest.mark.integration
def test_missing_secret_is_not_found(sm: AwsSecretsManagerBackend) -> None:
    with pytest.raises(SecretNotFound) as info:
        sm.read(SecretRef.parse(f"aws:missing/{_uid()}#k@AWSPREVIOUS"))
    assert "aws:missing/" in str(info.value)
    assert isinstance(info.value.__cause__, ClientError)


@pytest.mark.integration
def test_health(sm: AwsSecretsManagerBackend, ssm: AwsSsmBackend) -> None:
    assert sm.health().ok
    assert ssm.health().ok


# ---- SSM Parameter Store --------------------------------------------------------------------------


@pytest.mark.integration
def test_ssm_securestring_is_decrypted(aws_endpoint: str, ssm: AwsSsmBackend) -> None:
    name = f"/prod/{_uid()}/db/password"
    _client("ssm", aws_endpoint).put_parameter(Name=name, Value=VALUE, Type="SecureString")
    got = ssm.read(SecretRef.parse(f"aws-ssm:{name}"))
    assert got.value == VALUE.encode()
    assert got.version == "1"


@pytest.mark.integration
def test_ssm_version_selection(aws_endpoint: str, ssm: AwsSsmBackend) -> None:
    client = _client("ssm", aws_endpoint)
    name = f"/prod/{_uid()}/config"
    client.put_parameter(Name=name, Value='{"user": "alice"}', Type="SecureString")
    client.put_parameter(Name=name, Value='{"user": "bob"}', Type="SecureString", Overwrite=True)

    def read(text: str) -> tuple[bytes, str | None]:
        got = ssm.read(SecretRef.parse(text))
        return got.value, got.version

    assert read(f"aws-ssm:{name}#user") == (b"bob", "2")
    assert read(f"aws-ssm:{name}:1#user") == (b"alice", "1")
    assert read(f"aws-ssm:{name}#user@1") == (b"alice", "1")
    assert read(f"aws-ssm:{name}@2") == (b'{"user": "bob"}', "2")
    with pytest.raises(ConfigError):
        ssm.read(SecretRef.parse(f"aws-ssm:{name}:1@2"))
    with pytest.raises(SecretNotFound):
        ssm.read(SecretRef.parse(f"aws-ssm:{name}@9"))


@pytest.mark.integration
def test_ssm_missing_parameter_is_not_found(ssm: AwsSsmBackend) -> None:
    with pytest.raises(SecretNotFound) as info:
        ssm.read(SecretRef.parse(f"aws-ssm:/missing/{_uid()}"))
    assert "aws-ssm:/missing/" in str(info.value)


# ---- failure modes --------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens here any more: connections are refused at once


@pytest.mark.integration
@pytest.mark.parametrize("cls", [AwsSecretsManagerBackend, AwsSsmBackend])
def test_unreachable_endpoint_is_unavailable_quickly(aws_endpoint: str, cls: type[Any]) -> None:
    backend = cls(
        "down",
        region=REGION,
        endpoint_url=f"http://127.0.0.1:{_closed_port()}",
        max_attempts=2,
        connect_timeout=0.5,
        read_timeout=0.5,
    )
    start = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        backend.read(SecretRef.parse("down:prod/x#k"))
    assert time.monotonic() - start < 10
    assert "down:prod/x#k" in str(info.value)
    health = backend.health()
    assert not health.ok
    assert "unreachable" in health.detail
    backend.close()


@pytest.mark.integration
def test_assume_role_reads_and_refreshes(aws_endpoint: str) -> None:
    # The role is in the caller's own account, so moto and LocalStack both show it the same secrets.
    account = _client("sts", aws_endpoint).get_caller_identity()["Account"]
    name = f"prod/role-{_uid()}"
    _client("secretsmanager", aws_endpoint).create_secret(Name=name, SecretString=f'{{"k": "{VALUE}"}}')
    backend = AwsSecretsManagerBackend(
        "aws",
        region=REGION,
        endpoint_url=aws_endpoint,
        assume_role_arn=f"arn:aws:iam::{account}:role/depthguard-reader",
        role_session_name="depthguard-test",
        external_id="ext-123",
        # 15 minutes is inside botocore's advisory refresh window, so every use re-assumes the role:
        # this shows the refresh path works without waiting for a real expiry.
        duration_seconds=900,
    )
    assert backend.role_refresh_count == 0  # deferred: no STS call before the first request
    assert backend.read(SecretRef.parse(f"aws:{name}#k")).value == VALUE.encode()
    creds = backend.credentials()
    assert creds.method == "depthguard-assume-role"
    first = creds.get_frozen_credentials().access_key
    assert first != "testing"
    assert backend.read(SecretRef.parse(f"aws:{name}#k")).value == VALUE.encode()
    assert backend.role_refresh_count >= 2
    backend.close()


# ---- translation table (no server needed) ---------------------------------------------------------


def _client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": f"echo {VALUE}"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetSecretValue",
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_client_error("ResourceNotFoundException"), SecretNotFound),
        (_client_error("ParameterNotFound"), SecretNotFound),
        (_client_error("ParameterVersionNotFound"), SecretNotFound),
        (_client_error("AccessDeniedException"), BackendAuthError),
        (_client_error("UnrecognizedClientException"), BackendAuthError),
        (_client_error("ExpiredTokenException"), BackendAuthError),
        (_client_error("InvalidSignatureException"), BackendAuthError),
        (_client_error("ThrottlingException"), BackendUnavailable),
        (_client_error("SomethingNew", 503), BackendUnavailable),
        (_client_error("InternalServiceError", 500), BackendUnavailable),
        (_client_error("InvalidParameterException"), BackendError),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), BackendUnavailable),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), BackendUnavailable),
    ],
)
def test_error_translation(exc: Exception, expected: type[BackendError]) -> None:
    with pytest.raises(expected) as info, _map_errors("aws: aws:prod/x#k"):
        raise exc
    assert type(info.value) is expected
    assert info.value.__cause__ is exc
    assert "aws:prod/x#k" in str(info.value)
    # The AWS message is free text (here it echoes the value on purpose): it must not be copied.
    assert VALUE not in str(info.value)


def test_from_options_rejects_unknown_keys_and_builds() -> None:
    with pytest.raises(ConfigError) as info:
        AwsSsmBackend.from_options("aws-ssm", {"type": "aws", "region": REGION, "regoin": "x"})
    assert "backends.aws-ssm.regoin" in str(info.value)
    backend = AwsSecretsManagerBackend.from_options(
        "aws", {"type": "aws", "region": REGION, "endpoint_url": "http://127.0.0.1:1", "max_attempts": 1}
    )
    assert isinstance(backend, AwsSecretsManagerBackend)
    assert backend.endpoint_url == "http://127.0.0.1:1"
    backend.close()


def test_missing_region_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for var in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError) as info:
        AwsSecretsManagerBackend("aws")
    assert "backends.aws.region" in str(info.value)
