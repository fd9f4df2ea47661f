"""The address a session listens on when its workers may run on other nodes: never loopback."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from typing import Iterable

_SIOCGIFADDR = 0x8915


def interface_addresses() -> list[str]:
    """The IPv4 address of each network interface of this node that has one (Linux)."""
    found = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR,
                                     struct.pack("256s", name.encode()[:15]))
            except OSError:  # no IPv4 address on this interface
                continue
            found.append(socket.inet_ntoa(answer[20:24]))
    finally:
        probe.close()
    return found


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a name
        return address == "localhost"


def pick_address(host: str, resolved: Iterable[str], interfaces: Iterable[str]) -> str:
    """The address other nodes reach this one at (a pure function): the first address
    ``host`` resolves to that is not loopback, else the first such address of an interface.

    Raises ``ValueError`` naming ``host`` and what it resolves to when every address is
    loopback, since workers on other nodes could never connect to one.
    """
    resolved = list(resolved)
    for address in [*resolved, *interfaces]:
        if not is_loopback(address):
            return address
    raise ValueError(
        f"this node's host name {host!r} resolves only to loopback "
        f"({', '.join(resolved) or 'nothing'}) and no interface has another address: workers "
        "on other nodes could not connect; pass interface= an address of this node they reach")


def reachable_address() -> str:
    """This node's address for workers on other nodes; raises ``ValueError`` (see
    :func:`pick_address`)."""
    host = socket.gethostname()
    try:
        resolved = list(dict.fromkeys(
            str(info[4][0]) for info in socket.getaddrinfo(host, None, socket.AF_INET)))
    except OSError:
        resolved = []
    return pick_address(host, resolved, interface_addresses())
