"""Who is on the other end of a Unix socket, according to the kernel.

The sidecar's identity layer rests on ``SO_PEERCRED``: the uid/gid/pid the kernel recorded when the
peer called ``connect``. Nothing the peer sends can change it, so it is read once per connection and
never from request data. ``SO_PEERGROUPS`` (Linux >= 4.13) adds the supplementary groups, so roles can
be granted by group; without it only the primary gid is known. The executable path comes from
``/proc/PID/exe`` and is *best effort*, for the audit trail only: the pid may have exited or live in
another pid namespace, and it must never be used for an access decision.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field

from broker.audit import Peer

__all__ = ["PeerCred", "exe_of", "read_peercred"]

# Linux values; the socket module exposes SO_PEERCRED but not always SO_PEERGROUPS.
_SO_PEERCRED: int = getattr(socket, "SO_PEERCRED", 17)
_SO_PEERGROUPS: int = getattr(socket, "SO_PEERGROUPS", 59)
_UCRED = struct.Struct("iII")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
_MAX_GROUPS = 256
_NO_ID = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class PeerCred:
    """The kernel's view of a connected peer (read at ``connect`` time)."""

    uid: int
    gid: int
    pid: int
    groups: tuple[int, ...]
    """Primary gid first, then the supplementary groups when the kernel reports them."""
    exe: str | None = None
    """``/proc/PID/exe`` at accept time; for the audit trail only, never for decisions."""
    audit: Peer = field(init=False, repr=False, compare=False)
    """The same identity as the audit log records it, built once per connection (not per request)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "audit", Peer(uid=self.uid, gid=self.gid, pid=self.pid, exe=self.exe))


def exe_of(pid: int) -> str | None:
    """Best-effort executable path of ``pid`` (``None`` if gone, hidden, or not ours to read)."""
    if pid <= 0:
        return None
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def _groups(sock: socket.socket, gid: int) -> tuple[int, ...]:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * _MAX_GROUPS)
    except OSError:
        return (gid,)
    extra = struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
    return (gid, *sorted({g for g in extra if g != gid}))


def read_peercred(sock: socket.socket, *, with_exe: bool = True) -> PeerCred:
    """Read the peer's credentials from a connected ``AF_UNIX`` stream socket.

    Raises ``OSError`` when the socket has no peer credentials (not a Unix socket, or not connected):
    callers must then refuse the connection rather than guess an identity.
    """
    if sock.family != socket.AF_UNIX:
        raise OSError(f"peer credentials need an AF_UNIX socket, not {sock.family!r}")
    raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    if uid == _NO_ID or gid == _NO_ID:  # (uid_t)-1: the kernel had no credentials for this peer
        raise OSError("the kernel reported no peer credentials")
    exe = exe_of(pid) if with_exe else None
    return PeerCred(uid=uid, gid=gid, pid=pid, groups=_groups(sock, gid), exe=exe)
