"""Tests for ``broker/policy.py``: roles from uids/gids, glob scopes, admin, deny by default."""

from __future__ import annotations

import pytest

from broker.policy import ADMIN_SCOPES, Policy, RoleSpec

NAMES = ["db-password", "stripe-key", "stripe-webhook", "tls-cert", "Stripe-Upper", "weird[1]"]


def role(name: str, *, uids: tuple[int, ...] = (), gids: tuple[int, ...] = (),
         secrets: tuple[str, ...] = (), admin: bool = False, ttl: float = 600.0) -> RoleSpec:
    return RoleSpec(name=name, uids=frozenset(uids), gids=frozenset(gids), secrets=secrets, token_ttl=ttl,
                    admin=admin)


@pytest.fixture
def policy() -> Policy:
    return Policy(
        [
            role("web", uids=(1000,), secrets=("db-password", "stripe-*")),
            role("batch", gids=(2000,), secrets=("tls-?ert",)),
            role("ops", uids=(1000, 1001), gids=(3000,), secrets=("[dt]*",)),
            role("admin", uids=(0,), admin=True),
            role("empty", uids=(4000,)),
        ],
        NAMES,
    )


def test_roles_for_uid_and_gids(policy: Policy) -> None:
    assert policy.roles_for(1000, []) == ["ops", "web"]  # sorted, both uid matches
    assert policy.roles_for(1001, [2000]) == ["batch", "ops"]
    assert policy.roles_for(5000, [2000]) == ["batch"]  # by gid only
    assert policy.roles_for(5000, [9999, 3000]) == ["ops"]  # any of the peer's gids
    assert policy.roles_for(0, []) == ["admin"]


def test_no_role_for_unlisted_peer(policy: Policy) -> None:
    assert policy.roles_for(5000, []) == []
    assert policy.roles_for(5000, [5000, 1000]) == []  # a gid equal to a listed *uid* grants nothing


def test_role_lookup_and_unknown_role(policy: Policy) -> None:
    assert policy.role("web").uids == frozenset({1000})
    with pytest.raises(KeyError):
        policy.role("nope")
    with pytest.raises(KeyError):
        policy.scopes("nope")


@pytest.mark.parametrize(
    ("scopes", "name", "allowed"),
    [
        (("db-password", "stripe-*"), "db-password", True),
        (("db-password", "stripe-*"), "stripe-key", True),
        (("db-password", "stripe-*"), "stripe-webhook", True),
        (("db-password", "stripe-*"), "tls-cert", False),  # configured, out of scope
        (("db-password", "stripe-*"), "Stripe-Upper", False),  # case-sensitive everywhere
        (("db-password", "stripe-*"), "stripe-unknown", False),  # glob matches, but not configured
        (("db-password", "stripe-*"), "nope", False),  # unknown: same answer as out of scope
        (("tls-?ert",), "tls-cert", True),
        (("[dt]*",), "db-password", True),
        (("[dt]*",), "stripe-key", False),
        (("*",), "weird[1]", True),
        (("weird[1]",), "weird[1]", True),  # an exact configured name is taken literally
        (("weird[1]",), "weird1", False),
        (("*",), "../db-password", False),  # odd names never match: only configured names can
        (("*",), "", False),
        ((), "db-password", False),  # no scopes: deny
    ],
)
def test_allows(policy: Policy, scopes: tuple[str, ...], name: str, allowed: bool) -> None:
    assert policy.allows(scopes, name) is allowed


def test_unknown_and_out_of_scope_look_the_same(policy: Policy) -> None:
    scopes = policy.scopes("web")
    assert policy.allows(scopes, "tls-cert") == policy.allows(scopes, "no-such-secret") is False


def test_admin_sees_everything(policy: Policy) -> None:
    assert policy.scopes("admin") == ADMIN_SCOPES == ("*",)
    assert policy.visible(policy.scopes("admin")) == sorted(NAMES)
    assert all(policy.allows(policy.scopes("admin"), n) for n in NAMES)
    assert not policy.allows(policy.scopes("admin"), "not-configured")


def test_admin_ignores_listed_secrets() -> None:
    p = Policy([role("root", uids=(0,), secrets=("db-password",), admin=True)], NAMES)
    assert p.scopes("root") == ("*",)


def test_visible_is_sorted_and_scoped(policy: Policy) -> None:
    assert policy.visible(policy.scopes("web")) == ["db-password", "stripe-key", "stripe-webhook"]
    assert policy.visible(policy.scopes("batch")) == ["tls-cert"]
    assert policy.visible(policy.scopes("empty")) == []
    assert policy.visible(["stripe-*", "db-password"]) == ["db-password", "stripe-key", "stripe-webhook"]


def test_deny_by_default_without_roles() -> None:
    p = Policy([], NAMES)
    assert p.roles_for(1000, [1000]) == []
    assert p.visible(["nothing-*"]) == []


def test_duplicate_role_names_refused() -> None:
    with pytest.raises(ValueError, match="duplicate role"):
        Policy([role("web", uids=(1,)), role("web", uids=(2,))], NAMES)


def test_token_ttl_carried() -> None:
    p = Policy([role("short", uids=(1,), ttl=30.0)], NAMES)
    assert p.role("short").token_ttl == 30.0
    assert RoleSpec("x", frozenset(), frozenset(), ()).token_ttl == 600.0
