"""The AWS endpoint for integration tests: moto's server on a free loopback port, or LocalStack.

With ``DEPTHGUARD_TEST_AWS_ENDPOINT`` set (e.g. ``http://127.0.0.1:4566`` from
``scripts/localstack-host.sh``) the same tests run against that endpoint and nothing is started.
In CI (``CI`` set) or with ``DEPTHGUARD_TEST_LOCALSTACK=1``, the tests run twice: against moto and
against a real LocalStack that the fixture starts with the pinned ``scripts/localstack-host.sh``
(``DEPTHGUARD_TEST_LOCALSTACK=0`` turns that off).
Credentials are dummies set through the environment only (the default chain must find them, as it
would in production); boto3 itself is never patched.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

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


SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "localstack-host.sh"


def _targets() -> list[str]:
    if os.environ.get(ENDPOINT_ENV, "").strip():
        return ["external"]
    wanted = os.environ.get("DEPTHGUARD_TEST_LOCALSTACK", "")
    if wanted == "1" or (os.environ.get("CI") and wanted != "0"):
        return ["moto", "localstack"]
    return ["moto"]


def _start_localstack() -> str:
    """Install (first time, pinned) and start LocalStack on the host; its endpoint URL."""
    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith(f"export {ENDPOINT_ENV}="):
            return line.split("=", 1)[1].strip()
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    pytest.fail(f"LocalStack did not start (exit {proc.returncode}): {' | '.join(tail)}")


@pytest.fixture(scope="session", params=_targets())
def aws_endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    """Yield an AWS-compatible endpoint URL with dummy credentials in the environment; restore the
    environment and stop the server (if we started one) afterwards."""
    saved = {k: os.environ.get(k) for k in (*_DUMMY_ENV, *_CLEARED_ENV)}
    os.environ.update(_DUMMY_ENV)
    for k in _CLEARED_ENV:
        os.environ.pop(k, None)
    server = None
    localstack = False
    try:
        external = os.environ.get(ENDPOINT_ENV, "").strip()
        if request.param == "external":
            yield external.rstrip("/")
            return
        if request.param == "localstack":
            localstack = True
            yield _start_localstack().rstrip("/")
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
        if localstack:
            subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
