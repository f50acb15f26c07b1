"""Who may read which secret: roles from peer uids/gids, scopes as globs over configured secret names.

Why it exists: the sidecar's fourth layer. The kernel tells us the caller's uid/gid (``SO_PEERCRED``);
this module maps them to roles, and a role to the *scopes* written into its tokens. A request for a
secret is then allowed only when the name is one the configuration defines **and** a scope glob
matches it.

Contract
--------
* **Deny by default.** A uid/gid that no role lists gets no role; an empty scope list allows nothing; a
  name the configuration does not define is never allowed, even when a glob like ``stripe-*`` or ``*``
  would match it.
* **No probing.** ``allows`` answers ``False`` both for a configured name outside the scopes and for a
  name that does not exist at all, so the HTTP layer answers 403 for both and a caller cannot learn
  which names exist outside its scope.
* Globs are ``fnmatch.fnmatchcase`` patterns (case-sensitive on every platform: ``DB-*`` does not match
  ``db-password``). Secret names are matched literally; only the scope is a pattern.
* An admin role's scopes are ``("*",)``: every configured name.

This module holds no secret values and never logs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

__all__ = ["ADMIN_SCOPES", "Policy", "RoleSpec"]

ADMIN_SCOPES: tuple[str, ...] = ("*",)
"""The scopes an admin role's tokens carry."""

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class RoleSpec:
    """One role from the configuration's ``roles:`` table."""

    name: str
    uids: frozenset[int]
    """Peer uids that may use this role."""
    gids: frozenset[int]
    """Peer gids (the connection's primary gid) that may use this role."""
    secrets: tuple[str, ...]
    """``fnmatch`` globs (or exact names) over configured secret names; ignored for an admin role."""
    token_ttl: float = 600.0
    """Lifetime of this role's tokens in seconds, before the token service's cap."""
    admin: bool = False
    """An admin role's scope is every configured secret."""


class Policy:
    """Roles and the set of configured secret names; immutable once built (reload builds a new one)."""

    def __init__(self, roles: Iterable[RoleSpec], secret_names: Iterable[str]) -> None:
        by_name: dict[str, RoleSpec] = {}
        for spec in roles:
            if spec.name in by_name:
                raise ValueError(f"duplicate role name {spec.name!r}")
            by_name[spec.name] = spec
        self._roles = by_name
        self._names = frozenset(secret_names)
        self._sorted_names = tuple(sorted(self._names))

    def __repr__(self) -> str:
        return f"Policy(roles={sorted(self._roles)!r}, secrets={len(self._names)})"

    @property
    def secret_names(self) -> frozenset[str]:
        """Every configured secret name."""
        return self._names

    def roles_for(self, uid: int, gids: Iterable[int]) -> list[str]:
        """Sorted names of the roles this peer may use; empty when none lists its uid or any of its gids."""
        peer_gids = frozenset(gids)
        return sorted(
            name
            for name, spec in self._roles.items()
            if uid in spec.uids or not spec.gids.isdisjoint(peer_gids)
        )

    def role(self, name: str) -> RoleSpec:
        """The role called ``name``; ``KeyError`` if the configuration has none (the caller answers 403)."""
        return self._roles[name]

    def scopes(self, role: str) -> tuple[str, ...]:
        """The globs a token for ``role`` carries: ``("*",)`` for an admin role."""
        spec = self._roles[role]
        return ADMIN_SCOPES if spec.admin else spec.secrets

    def allows(self, scopes: Sequence[str], secret_name: str) -> bool:
        """Whether a token with ``scopes`` may read ``secret_name``.

        ``False`` for an unknown name as well as for an out-of-scope one (see the module docstring: the
        two must look the same to the caller)."""
        if secret_name not in self._names:  # deny by default: only configured names are ever readable
            return False
        for pattern in scopes:
            if pattern == secret_name:
                return True
            if not _GLOB_CHARS.isdisjoint(pattern) and fnmatchcase(secret_name, pattern):
                return True
        return False

    def visible(self, scopes: Sequence[str]) -> list[str]:
        """The configured names ``scopes`` allow, sorted (what ``GET /v1/secrets`` lists)."""
        return [name for name in self._sorted_names if self.allows(scopes, name)]
