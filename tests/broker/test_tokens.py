"""Tests for ``broker/tokens.py`` with real Ed25519 and pyjwt: forgeries, rotation, key files, the cache.

Forged tokens are built by hand (base64url segments) or signed with real keys, never by mocking
pyjwt or cryptography. Time is a fake clock shared by the key ring and the token service. Counting
signature verifications uses a ``KeyRing`` subclass: the service asks the ring for a verification key
exactly once per uncached verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.tokens import REQUIRED_CLAIMS, Claims, KeyRing, TokenService, key_id
from depthguard.errors import AccessError, ConfigError, Forbidden, Unauthorized

ISS = "depthguard-sidecar"
AUD = "depthguard-sidecar:/run/depthguard/sidecar.sock"
T0 = 1_700_000_000.0
UID = 1000
ROTATE = 86400.0
MAX_TTL = 3600.0
LEEWAY = 5.0


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class CountingKeyRing(KeyRing):
    """Counts key lookups: one per signature verification the service attempts."""

    lookups = 0

    def verification_key(self, kid: str) -> Ed25519PublicKey | None:
        self.lookups += 1
        return super().verification_key(kid)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ring(clock: FakeClock) -> CountingKeyRing:
    return CountingKeyRing(rotate_every=ROTATE, max_token_ttl=MAX_TTL, now=clock)


@pytest.fixture
def svc(ring: KeyRing, clock: FakeClock) -> TokenService:
    return TokenService(ring, issuer=ISS, audience=AUD, leeway=LEEWAY, max_ttl=MAX_TTL, now=clock)


def service(ring: KeyRing, clock: FakeClock, **kw: Any) -> TokenService:
    """Another service over the same ring: a fresh (empty) verify cache, like a restart."""
    args: dict[str, Any] = {"issuer": ISS, "audience": AUD, "leeway": LEEWAY, "max_ttl": MAX_TTL,
                            "now": clock}
    args.update(kw)
    return TokenService(ring, **args)


# ------------------------------------------------------------------------------------------- forging


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(seg: str) -> bytes:
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


def segment(obj: object) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    h, p, s = token.split(".")
    return json.loads(unb64(h)), json.loads(unb64(p)), s


def payload(clock: FakeClock, **over: Any) -> dict[str, Any]:
    now = clock()
    base: dict[str, Any] = {
        "iss": ISS, "aud": AUD, "sub": f"uid:{UID}", "role": "web", "scopes": ["db-*"], "uid": UID,
        "iat": now, "nbf": now, "exp": now + 600, "jti": "j" * 32,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def sign_ours(ring: KeyRing, claims: dict[str, Any], **headers: Any) -> str:
    """A token signed with the ring's real current key: only the claims are wrong."""
    kid, key = ring.signing_key()
    # the JWS layer, not jwt.encode: that one refuses some of the bad claims we want to sign
    return jwt.api_jws.encode(json.dumps(claims).encode(), key, algorithm="EdDSA",
                              headers={"kid": kid, **headers})


def reason(svc: TokenService, token: str, peer_uid: int = UID) -> str:
    with pytest.raises(Unauthorized) as info:
        svc.verify(token, peer_uid=peer_uid)
    return info.value.reason


# --------------------------------------------------------------------------------------- issue/verify


def test_issue_and_verify_round_trip(svc: TokenService, ring: KeyRing, clock: FakeClock) -> None:
    token, claims = svc.issue(uid=UID, role="web", scopes=["db-*", "stripe-key"], ttl=600)
    header, body, _ = parts(token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == ring.current_kid == claims.kid
    assert set(body) == set(REQUIRED_CLAIMS)
    assert body["iss"] == ISS and body["aud"] == AUD and body["sub"] == f"uid:{UID}"
    assert claims.exp == claims.iat + 600 == T0 + 600 and claims.nbf == T0
    assert len(claims.jti) == 32
    assert svc.verify(token, peer_uid=UID) == claims
    assert claims.scopes == ("db-*", "stripe-key")


def test_ttl_capped_and_jti_unique(svc: TokenService) -> None:
    t1, c1 = svc.issue(uid=UID, role="web", scopes=[], ttl=10 * MAX_TTL)
    t2, c2 = svc.issue(uid=UID, role="web", scopes=[], ttl=60)
    assert c1.exp - c1.iat == MAX_TTL
    assert c1.jti != c2.jti and t1 != t2


def test_service_cap_never_exceeds_keyring_grace(clock: FakeClock) -> None:
    ring = KeyRing(max_token_ttl=300, now=clock)
    svc = TokenService(ring, issuer=ISS, audience=AUD, max_ttl=3600, now=clock)
    assert svc.max_ttl == 300
    assert svc.issue(uid=1, role="r", scopes=[], ttl=3600)[1].exp == T0 + 300


@pytest.mark.parametrize("bad", [{"uid": -1}, {"uid": True}, {"ttl": 0}, {"ttl": -5}])
def test_issue_refuses_bad_arguments(svc: TokenService, bad: dict[str, Any]) -> None:
    args: dict[str, Any] = {"uid": UID, "role": "web", "scopes": [], "ttl": 60.0, **bad}
    with pytest.raises(ValueError):
        svc.issue(**args)


def test_uid_mismatch_is_forbidden(svc: TokenService) -> None:
    token, _ = svc.issue(uid=UID, role="web", scopes=[], ttl=60)
    with pytest.raises(Forbidden) as info:
        svc.verify(token, peer_uid=UID + 1)
    assert info.value.reason == "uid_mismatch"
    assert not isinstance(info.value, Unauthorized)
    assert svc.verify(token, peer_uid=UID).uid == UID


def test_messages_never_contain_the_token(svc: TokenService, ring: KeyRing, clock: FakeClock) -> None:
    token, _ = svc.issue(uid=UID, role="web", scopes=[], ttl=60)
    forged = sign_ours(ring, payload(clock, aud="other"))
    for bad, peer in ((forged, UID), (token, UID + 1), (token[:-3] + "AAA", UID)):
        with pytest.raises(AccessError) as info:
            svc.verify(bad, peer_uid=peer)
        text = str(info.value) + repr(info.value)
        assert bad not in text and bad.split(".")[2] not in text


# ------------------------------------------------------------------------------------------ forgeries


def test_alg_none_rejected(svc: TokenService, ring: KeyRing, clock: FakeClock) -> None:
    body = segment(payload(clock))
    for alg in ("none", "None", "NONE"):
        forged = f"{segment({'alg': alg, 'typ': 'JWT', 'kid': ring.current_kid})}.{body}."
        assert reason(svc, forged) == "bad_algorithm"
    no_alg = f"{segment({'typ': 'JWT', 'kid': ring.current_kid})}.{body}.{b64(b'x' * 64)}"
    assert reason(svc, no_alg) == "bad_algorithm"


def test_hs256_keyed_with_public_key_rejected(svc: TokenService, ring: KeyRing, clock: FakeClock) -> None:
    """The classic key-confusion attack: HMAC over the token with the verifier's public key as secret."""
    public = ring.verification_key(ring.current_kid)
    assert public is not None
    secrets = [
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
    ]
    for secret in secrets:
        signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT', 'kid': ring.current_kid})}." \
                        f"{segment(payload(clock))}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert reason(svc, f"{signing_input}.{b64(mac)}") == "bad_algorithm"


def test_rs256_rejected(svc: TokenService, ring: KeyRing, clock: FakeClock) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(payload(clock), rsa_key, algorithm="RS256", headers={"kid": ring.current_kid})
    assert reason(svc, forged) == "bad_algorithm"


def test_other_ed25519_key_rejected(svc: TokenService, ring: KeyRing, clock: FakeClock) -> None:
    other = Ed25519PrivateKey.generate()
    with_our_kid = jwt.encode(payload(clock), other, algorithm="EdDSA", headers={"kid": ring.current_kid})
    assert reason(svc, with_our_kid) == "bad_signature"
    with_its_kid = jwt.encode(payload(clock), other, algorithm="EdDSA",
                              headers={"kid": key_id(other.public_key())})
    assert reason(svc, with_its_kid) == "unknown_key"
    no_kid = jwt.encode(payload(clock), other, algorithm="EdDSA")
    assert reason(svc, no_kid) == "unknown_key"


def test_expired(svc: TokenService, clock: FakeClock) -> None:
    token, claims = svc.issue(uid=UID, role="web", scopes=[], ttl=60)
    clock.t = claims.exp + LEEWAY - 0.01  # within the leeway: still accepted
    svc2 = service(svc.keyring, clock)
    assert svc2.verify(token, peer_uid=UID) == claims
    clock.t = claims.exp + LEEWAY
    assert reason(service(svc.keyring, clock), token) == "expired"


def test_expired_signed_by_us(svc: TokenService, ring: KeyRing, clock: FakeClock) -> None:
    forged = sign_ours(ring, payload(clock, iat=T0 - 700, nbf=T0 - 700, exp=T0 - 100))
    assert reason(svc, forged) == "expired"


def test_nbf_in_future(svc: TokenService, ring: KeyRing, clock: FakeClock) -> None:
    assert reason(svc, sign_ours(ring, payload(clock, nbf=T0 + 60))) == "not_yet_valid"
    assert reason(svc, sign_ours(ring, payload(clock, iat=T0 + 60))) == "not_yet_valid"
    within_leeway = sign_ours(ring, payload(clock, nbf=T0 + LEEWAY - 1))
    assert svc.verify(within_leeway, peer_uid=UID).nbf == T0 + LEEWAY - 1


def test_wrong_audience(svc: TokenService, ring: KeyRing, clock: FakeClock) -> None:
    elsewhere = "depthguard-sidecar:/other.sock"
    assert reason(svc, sign_ours(ring, payload(clock, aud=elsewhere))) == "bad_audience"
    # a list that contains ours is not "exactly ours": our tokens carry one audience string
    assert reason(svc, sign_ours(ring, payload(clock, aud=[AUD, "x"]))) == "bad_audience"
    other = service(ring, clock, audience="depthguard-sidecar:/other.sock")
    token, _ = other.issue(uid=UID, role="web", scopes=[], ttl=60)
    assert reason(svc, token) == "bad_audience"


def test_wrong_issuer(svc: TokenService, ring: KeyRing, clock: FakeClock) -> None:
    assert reason(svc, sign_ours(ring, payload(clock, iss="evil"))) == "bad_issuer"
    token, _ = service(ring, clock, issuer="someone-else").issue(uid=UID, role="web", scopes=[], ttl=60)
    assert reason(svc, token) == "bad_issuer"


@pytest.mark.parametrize(
    "edit",
    [
        {"scopes": ["*"]},
        {"uid": 0, "sub": "uid:0"},
        {"role": "admin"},
        {"exp": T0 + 10 * 86400},
        {"jti": "f" * 32},
    ],
)
def test_edited_claims_keep_signature(svc: TokenService, clock: FakeClock, edit: dict[str, Any]) -> None:
    token, _ = svc.issue(uid=UID, role="web", scopes=["db-*"], ttl=60)
    header, body, sig = token.split(".")
    claims = json.loads(unb64(body))
    claims.update(edit)
    forged = f"{header}.{segment(claims)}.{sig}"
    assert reason(service(svc.keyring, clock), forged, peer_uid=claims["uid"]) == "bad_signature"
    assert reason(svc, forged, peer_uid=claims["uid"]) == "bad_signature"  # not served from the cache either


def test_edited_header_keeps_signature(svc: TokenService) -> None:
    token, _ = svc.issue(uid=UID, role="web", scopes=[], ttl=60)
    header, _, sig = parts(token)
    header["typ"] = "JWT+x"
    assert reason(svc, f"{segment(header)}.{token.split('.')[1]}.{sig}") == "bad_signature"


def test_revoked(svc: TokenService) -> None:
    token, claims = svc.issue(uid=UID, role="web", scopes=[], ttl=60)
    svc.revoke(claims.jti, claims.exp)
    assert svc.is_revoked(claims.jti)
    assert reason(svc, token) == "revoked"


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_missing_claim(svc: TokenService, ring: KeyRing, clock: FakeClock, claim: str) -> None:
    assert reason(svc, sign_ours(ring, payload(clock, **{claim: _DROP}))) == "missing_claim"
    assert reason(svc, sign_ours(ring, payload(clock, **{claim: None}))) == "missing_claim"


@pytest.mark.parametrize(
    "bad",
    [
        {"uid": "1000"}, {"uid": 1000.0}, {"uid": True}, {"uid": -1},
        {"scopes": "db-*"}, {"scopes": [1]}, {"scopes": {"a": 1}},
        {"role": 5}, {"role": ""}, {"sub": ["x"]}, {"jti": 7}, {"jti": ""},
        {"exp": "tomorrow"}, {"exp": True}, {"nbf": [1]}, {"iat": {}},
    ],
)
def test_wrong_claim_types(svc: TokenService, ring: KeyRing, clock: FakeClock, bad: dict[str, Any]) -> None:
    assert reason(svc, sign_ours(ring, payload(clock, **bad))) == "malformed"


def test_non_finite_times(svc: TokenService, ring: KeyRing, clock: FakeClock) -> None:
    kid, key = ring.signing_key()
    body = json.dumps(payload(clock)).replace(f'"exp": {T0 + 600}', '"exp": Infinity')
    assert "Infinity" in body
    forged = jwt.api_jws.encode(body.encode(), key, algorithm="EdDSA", headers={"kid": kid})
    assert reason(svc, forged) == "malformed"


@pytest.mark.parametrize(
    "garbage",
    [
        "", "abc", "a.b", "a.b.c", "...", "a.b.c.d", "Bearer x.y.z",
        "eyJhbGciOiJFZERTQSJ9", "€.€.€", "x" * 9000,
        f"{segment([1, 2])}.{segment({})}.", f"{segment('str')}.{segment({})}.",
        f"{b64(b'not json')}.{segment({})}.{b64(b'x')}",
    ],
)
def test_garbage(svc: TokenService, garbage: str) -> None:
    assert reason(svc, garbage) == "malformed"


def test_garbage_payload_with_our_key(svc: TokenService, ring: KeyRing) -> None:
    kid, key = ring.signing_key()
    for body in (b"not json", b"[1,2,3]", b'"str"'):
        forged = jwt.api_jws.encode(body, key, algorithm="EdDSA", headers={"kid": kid})
        assert reason(svc, forged) == "malformed"


def test_non_string_kid(svc: TokenService, ring: KeyRing, clock: FakeClock) -> None:
    body = segment(payload(clock))
    forged = f"{segment({'alg': 'EdDSA', 'kid': 12})}.{body}.{b64(b'x' * 64)}"
    assert reason(svc, forged) == "malformed"


def test_missing_kid_with_our_key(svc: TokenService, ring: KeyRing, clock: FakeClock) -> None:
    _, key = ring.signing_key()
    forged = jwt.api_jws.encode(json.dumps(payload(clock)).encode(), key, algorithm="EdDSA")
    assert reason(svc, forged) == "unknown_key"


# ------------------------------------------------------------------------------------------- rotation


def test_rotation_on_schedule_produces_new_kid(svc: TokenService, ring: KeyRing, clock: FakeClock) -> None:
    old_token, old = svc.issue(uid=UID, role="web", scopes=[], ttl=MAX_TTL)
    clock.advance(ROTATE - 1)
    assert ring.signing_key()[0] == old.kid  # not due yet
    clock.advance(1)
    new_token, new = svc.issue(uid=UID, role="web", scopes=[], ttl=MAX_TTL)
    assert new.kid != old.kid and ring.current_kid == new.kid
    assert ring.kids() == [new.kid, old.kid]
    assert svc.verify(new_token, peer_uid=UID) == new
    # issued 86400 s ago with a 3600 s ttl, so expired; but its key is still in grace (not unknown_key)
    assert reason(service(ring, clock), old_token) == "expired"


def test_previous_key_verifies_within_grace_then_dropped(ring: KeyRing, clock: FakeClock) -> None:
    svc = service(ring, clock)
    clock.advance(ROTATE - 10)
    token, claims = svc.issue(uid=UID, role="web", scopes=[], ttl=MAX_TTL)  # 10 s before rotation
    clock.advance(10)
    rotated_at = clock()
    assert ring.signing_key()[0] != claims.kid  # the scheduled rotation
    clock.t = claims.exp - 1  # the newest token the old key signed, still valid: verifies (uncached)
    assert service(ring, clock).verify(token, peer_uid=UID) == claims
    clock.t = rotated_at + MAX_TTL + LEEWAY  # grace over: the key is gone
    assert ring.verification_key(claims.kid) is None
    assert claims.kid not in ring.kids()
    assert reason(service(ring, clock), token) == "unknown_key"


def test_forced_rotation_prunes_old_keys(ring: KeyRing, clock: FakeClock) -> None:
    kids = [ring.current_kid]
    for _ in range(5):
        clock.advance(1000)
        kids.append(ring.rotate())
    assert len(set(kids)) == 6
    # now T0+5000; grace is 3605 s: kids[0] (retired at T0+1000) is gone, kids[1] (T0+2000) remains
    assert ring.kids() == list(reversed(kids[1:]))
    assert ring.verification_key(kids[0]) is None
    clock.advance(1000)
    assert ring.kids() == list(reversed(kids[2:]))
    ring.rotate()
    assert len(ring._ring.previous) == 4  # retired keys past their grace are dropped from the ring


def test_key_id_is_rfc7638_thumbprint() -> None:
    # RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key
    x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    raw = base64.urlsafe_b64decode(x + "=")
    public = Ed25519PublicKey.from_public_bytes(raw)
    assert key_id(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


# ------------------------------------------------------------------------------------------ key files


def test_generated_key_file_is_0600_and_round_trips(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "keys" / "signing.pem"
    ring1 = KeyRing(key_file=path, now=clock)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"-----BEGIN PRIVATE KEY-----" in path.read_bytes()
    token, claims = service(ring1, clock).issue(uid=UID, role="web", scopes=["a"], ttl=600)
    clock.advance(60)
    ring2 = KeyRing(key_file=path, now=clock)  # a restart
    assert ring2.current_kid == ring1.current_kid
    assert service(ring2, clock).verify(token, peer_uid=UID) == claims
    assert [p.name for p in path.parent.iterdir()] == ["signing.pem"]  # no temp files left behind


def test_rotation_is_persisted(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "signing.pem"
    ring1 = KeyRing(key_file=path, rotate_every=1000, max_token_ttl=MAX_TTL, now=clock)
    old_token, old = service(ring1, clock).issue(uid=UID, role="web", scopes=[], ttl=MAX_TTL)
    clock.advance(1000)
    new_token, new = service(ring1, clock).issue(uid=UID, role="web", scopes=[], ttl=MAX_TTL)
    assert new.kid != old.kid
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().count("BEGIN PRIVATE KEY") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing.pem"]

    clock.advance(60)  # restart inside the old key's grace: both tokens verify
    ring2 = KeyRing(key_file=path, rotate_every=1000, max_token_ttl=MAX_TTL, now=clock)
    assert ring2.current_kid == new.kid
    assert service(ring2, clock).verify(new_token, peer_uid=UID) == new
    assert service(ring2, clock).verify(old_token, peer_uid=UID) == old

    clock.t = T0 + 1000 + MAX_TTL + LEEWAY  # restart after the grace: the old key is dropped on load
    ring3 = KeyRing(key_file=path, rotate_every=1000, max_token_ttl=MAX_TTL, now=clock)
    assert ring3.kids() == [new.kid]
    assert reason(service(ring3, clock), old_token) == "unknown_key"


def test_rotation_that_cannot_be_written_stays_in_memory(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gone" / "k.pem"
    ring = KeyRing(key_file=path, now=clock)
    pem = path.read_text()
    old = ring.current_kid
    path.unlink()
    path.parent.rmdir()  # the rewrite now fails (as on a read-only mount, which root would not feel)
    with caplog.at_level("DEBUG", logger="broker.tokens"):
        new = ring.rotate()
    assert new != old and ring.verification_key(old) is not None
    assert "in memory only" in caplog.text
    assert "PRIVATE" not in caplog.text and pem.splitlines()[3] not in caplog.text


def test_first_start_race_keeps_the_winners_file(tmp_path: Path, clock: FakeClock) -> None:
    from broker import tokens

    path = tmp_path / "k.pem"
    winner = KeyRing(key_file=path, now=clock)
    loser = tokens._Ring(tokens._Key.new(Ed25519PrivateKey.generate(), clock()))
    assert tokens._write_key_file(path, loser, replace=False) is False  # never clobbers
    assert KeyRing(key_file=path, now=clock).current_kid == winner.current_kid
    assert [p.name for p in tmp_path.iterdir()] == ["k.pem"]


def _plain_pem(path: Path) -> Ed25519PrivateKey:
    """A new key written the way openssl writes one: bare PKCS#8 PEM, mode 0600."""
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return key


def test_plain_openssl_style_pem_accepted(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "k.pem"
    key = _plain_pem(path)
    ring = KeyRing(key_file=path, now=clock)
    assert ring.current_kid == key_id(key.public_key())


def test_plain_pem_old_mtime_rotates_on_first_use(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "k.pem"
    _plain_pem(path)
    os.utime(path, (T0 - 2 * ROTATE, T0 - 2 * ROTATE))
    ring = KeyRing(key_file=path, now=clock)
    old = ring.current_kid
    assert ring.signing_key()[0] != old
    assert ring.verification_key(old) is not None  # its tokens may still be alive
    assert path.read_text().count("BEGIN PRIVATE KEY") == 2


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666, 0o700, 0o610])
def test_loose_key_file_refused(tmp_path: Path, clock: FakeClock, mode: int) -> None:
    path = tmp_path / "k.pem"
    KeyRing(key_file=path, now=clock)
    path.chmod(mode)
    if mode & 0o077 == 0:
        KeyRing(key_file=path, now=clock)  # 0700 has no group/other bits: fine
        return
    with pytest.raises(ConfigError) as info:
        KeyRing(key_file=path, now=clock)
    assert info.value.key == "tokens.key_file" and info.value.file == str(path)
    assert f"{mode:04o}" in info.value.reason and "0600" in info.value.reason


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_key_file_owned_by_another_user_refused(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "k.pem"
    KeyRing(key_file=path, now=clock)
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError) as info:
        KeyRing(key_file=path, now=clock)
    assert info.value.key == "tokens.key_file"
    assert "owned by uid 65534" in info.value.reason


def write_0600(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "no PEM private key"),
        (b"hello", "no PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a readable"),
        (b"\xff\xfe", "non-ASCII"),
        (b"# depthguard token signing keys, format 99.\n", "newer"),
    ],
)
def test_unreadable_key_files_refused(tmp_path: Path, clock: FakeClock, data: bytes, why: str) -> None:
    path = write_0600(tmp_path / "k.pem", data)
    with pytest.raises(ConfigError, match=why):
        KeyRing(key_file=path, now=clock)


def test_non_ed25519_and_encrypted_keys_refused(tmp_path: Path, clock: FakeClock) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        KeyRing(key_file=write_0600(tmp_path / "rsa.pem", pem), now=clock)
    enc = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(ConfigError, match="encrypted"):
        KeyRing(key_file=write_0600(tmp_path / "enc.pem", enc), now=clock)


def test_key_file_that_is_a_directory_refused(tmp_path: Path, clock: FakeClock) -> None:
    d = tmp_path / "dir.pem"
    d.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        KeyRing(key_file=d, now=clock)


def test_key_material_not_in_repr(tmp_path: Path, clock: FakeClock) -> None:
    ring = KeyRing(key_file=tmp_path / "k.pem", now=clock)
    pem = (tmp_path / "k.pem").read_text()
    body = pem.split("-----BEGIN PRIVATE KEY-----")[1].split("-----END")[0].strip()
    assert body not in repr(ring) and "PRIVATE" not in repr(ring)
    assert repr(ring._ring).count("private") == 0


# ---------------------------------------------------------------------------------------------- cache


def test_second_verify_uses_cache(svc: TokenService, ring: CountingKeyRing) -> None:
    token, claims = svc.issue(uid=UID, role="web", scopes=[], ttl=600)
    assert ring.lookups == 0
    assert svc.verify(token, peer_uid=UID) == claims
    assert ring.lookups == 1
    for _ in range(5):
        assert svc.verify(token, peer_uid=UID) == claims
    assert ring.lookups == 1
    other, _ = svc.issue(uid=UID, role="web", scopes=[], ttl=600)
    svc.verify(other, peer_uid=UID)
    assert ring.lookups == 2


def test_revocation_after_caching(svc: TokenService, ring: CountingKeyRing) -> None:
    token, claims = svc.issue(uid=UID, role="web", scopes=[], ttl=600)
    svc.verify(token, peer_uid=UID)
    svc.revoke(claims.jti, claims.exp)
    assert reason(svc, token) == "revoked"
    assert ring.lookups == 1  # refused from the cached entry


def test_expiry_after_caching(svc: TokenService, ring: CountingKeyRing, clock: FakeClock) -> None:
    token, claims = svc.issue(uid=UID, role="web", scopes=[], ttl=600)
    svc.verify(token, peer_uid=UID)
    clock.t = claims.exp + LEEWAY
    assert reason(svc, token) == "expired"
    assert ring.lookups == 1
    assert token not in svc._cache  # evicted
    assert reason(svc, token) == "expired"


def test_uid_checked_on_cached_path(svc: TokenService, ring: CountingKeyRing) -> None:
    token, _ = svc.issue(uid=UID, role="web", scopes=[], ttl=600)
    svc.verify(token, peer_uid=UID)
    with pytest.raises(Forbidden):
        svc.verify(token, peer_uid=0)
    assert ring.lookups == 1


def test_failures_are_not_cached(svc: TokenService, ring: CountingKeyRing, clock: FakeClock) -> None:
    forged = sign_ours(ring, payload(clock, aud="elsewhere"))
    for _ in range(3):
        assert reason(svc, forged) == "bad_audience"
    assert ring.lookups == 3
    assert len(svc._cache) == 0


def test_cache_is_bounded_lru(ring: CountingKeyRing, clock: FakeClock) -> None:
    svc = service(ring, clock, cache_size=2)
    t1, t2, t3 = (svc.issue(uid=UID, role="web", scopes=[], ttl=600)[0] for _ in range(3))
    svc.verify(t1, peer_uid=UID)
    svc.verify(t2, peer_uid=UID)
    svc.verify(t1, peer_uid=UID)  # t1 most recent
    svc.verify(t3, peer_uid=UID)  # evicts t2
    assert ring.lookups == 3
    svc.verify(t1, peer_uid=UID)
    assert ring.lookups == 3
    svc.verify(t2, peer_uid=UID)
    assert ring.lookups == 4
    assert len(svc._cache) == 2


# ----------------------------------------------------------------------------------------- revocation


def test_revocations_forgotten_after_expiry(svc: TokenService, clock: FakeClock) -> None:
    token, claims = svc.issue(uid=UID, role="web", scopes=[], ttl=60)
    svc.revoke(claims.jti, claims.exp)
    clock.t = claims.exp + LEEWAY - 0.01  # still acceptable by time: must still be revoked
    assert svc.is_revoked(claims.jti)
    assert reason(svc, token) == "revoked"
    clock.t = claims.exp + LEEWAY
    assert not svc.is_revoked(claims.jti)
    assert claims.jti not in svc._revoked
    assert reason(svc, token) == "expired"


def test_revocation_list_pruned(svc: TokenService, clock: FakeClock) -> None:
    for i in range(255):
        svc.revoke(f"old-{i}", T0 + 10)
    clock.advance(100)
    svc.revoke("new", T0 + 1000)  # the 256th revocation prunes the expired ones
    assert list(svc._revoked) == ["new"]


def test_claims_is_frozen() -> None:
    c = Claims(jti="j", sub="uid:1", role="r", scopes=(), uid=1, iat=0, nbf=0, exp=1, kid="k")
    with pytest.raises(AttributeError):
        c.uid = 2  # type: ignore[misc]
