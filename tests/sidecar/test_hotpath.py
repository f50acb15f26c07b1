"""The read path's hand-made pieces agree with the general ones they replace."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.backends.interface import Lease, SecretValue
from sidecar.app import secret_body
from sidecar.service import SecretRead


def _reference(got: SecretRead) -> bytes:
    """What the body was before it was built by hand: ``json.dumps`` of the route's dict."""
    value = got.value.value
    try:
        text, encoding = value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        import base64

        text, encoding = base64.b64encode(value).decode("ascii"), "base64"
    body = {"name": got.name, "value": text, "encoding": encoding, "version": got.value.version,
            "expires_at": got.value.expires_at, "backend": got.backend}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


_NAMES = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_LEASES = st.one_of(
    st.none(),
    st.builds(Lease, lease_id=st.just("lease-1"), issued_at=st.floats(min_value=0, max_value=4e9),
              ttl=st.floats(min_value=0, max_value=1e6), renewable=st.booleans()),
)


@settings(max_examples=400, deadline=None)
@given(name=_NAMES, value=st.binary(max_size=64) | st.text(max_size=64).map(str.encode),
       version=st.none() | _NAMES, lease=_LEASES, backend=_NAMES)
def test_secret_body_is_the_json_of_the_same_fields(name: str, value: bytes, version: str | None,
                                                     lease: Lease | None, backend: str) -> None:
    got = SecretRead(name, SecretValue(value, version=version, lease=lease), backend)
    body = secret_body(got)
    assert body == _reference(got)
    decoded = json.loads(body)
    assert decoded["name"] == name and decoded["backend"] == backend


def test_secret_body_escapes_quotes_controls_and_keeps_non_ascii() -> None:
    got = SecretRead('a"b\\c', SecretValue('p\u00e4ss\n"\x00'.encode(), version="7"), "local")
    body = secret_body(got)
    assert body == _reference(got)
    assert json.loads(body)["value"] == 'p\u00e4ss\n"\x00'
    assert "\u00e4".encode() in body  # not \\u-escaped: the same bytes json.dumps(ensure_ascii=False) gives
