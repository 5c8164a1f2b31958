"""Who a browser is behind an HTTP reverse proxy (nginx, Caddy, a cloud load
balancer): ``--trusted-proxy NETWORK``.

Such a proxy connects from its own address and names the client in
``X-Forwarded-For``, which anyone else could write too. So the header is
read only from a connection whose peer is a trusted proxy, and only as far
as trusted proxies wrote it: the client is the rightmost address in it that
is no trusted proxy. From any other peer the header is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The networks whose connections may say who their client is."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks: list[Network] = [ipaddress.ip_network(n, strict=False) for n in networks]

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address.version == n.version and address in n for n in self.networks)

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: ``peer`` itself unless it is a trusted proxy
        that says whom it forwards for."""
        if not self.trusted(peer) or not forwarded_for:
            return peer
        for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
            try:
                address = str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a hop that is no address: believe none of the rest
            if not self.trusted(address):
                return address
        return peer
