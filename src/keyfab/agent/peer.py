"""Who is on the other end of a Unix socket: SO_PEERCRED, as the kernel recorded it.

The credentials are those of the process that connected (taken by the kernel
at ``connect``), so a caller cannot claim another uid. Supplementary groups
come from the group database for that uid, not from the process (``/proc``
could be re-used by another process by the time it is read).
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from functools import cached_property

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int

    @cached_property
    def groups(self) -> frozenset[int]:
        """The primary gid and the supplementary groups the uid's account has (looked up
        once per connection: the account database is slow next to a call)."""
        try:
            name = pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return frozenset({self.gid})
        return frozenset({self.gid, *os.getgrouplist(name, self.gid)})

    def describe(self) -> str:
        return f"uid {self.uid} gid {self.gid} pid {self.pid}"


def peer_of(sock: socket.socket) -> Peer:
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return Peer(pid, uid, gid)


def group_id(name: str) -> int:
    """A group name (or number) as a gid; KeyError if there is no such group."""
    return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid


def user_id(name: str) -> int:
    return int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid
