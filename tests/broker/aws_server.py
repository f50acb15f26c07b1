"""The AWS endpoint for integration tests: moto's server on a free loopback port, or LocalStack.

With ``DEPTHGUARD_TEST_AWS_ENDPOINT`` set (e.g. ``http://127.0.0.1:4566`` from
``scripts/localstack-host.sh``) the same tests run against that endpoint and nothing is started.
Credentials are dummies set through the environment only (the default chain must find them, as it
would in production); boto3 itself is never patched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

ENDPOINT_ENV = "DEPTHGUARD_TEST_AWS_ENDPOINT"
REGION = "eu-west-1"

_DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    # Keep a developer's ~/.aws out of the tests: no profile, no config, no real credentials.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_CLEARED_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """Yield an AWS-compatible endpoint URL with dummy credentials in the environment; restore the
    environment and stop the server (if we started one) afterwards."""
    saved = {k: os.environ.get(k) for k in (*_DUMMY_ENV, *_CLEARED_ENV)}
    os.environ.update(_DUMMY_ENV)
    for k in _CLEARED_ENV:
        os.environ.pop(k, None)
    server = None
    try:
        external = os.environ.get(ENDPOINT_ENV, "").strip()
        if external:
            yield external.rstrip("/")
            return
        from moto.server import ThreadedMotoServer

        # werkzeug logs every request at INFO; keep test output readable.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        if server is not None:
            server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
