"""How to reach this server: a line per listener saying how to point its
kind of client at it (the desktop client, a browser, irssi), logged once
every listener is up, with the address it really got; and, for a
certificate made or named by ``--public``, its fingerprint to check."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import gatherResults
from twisted.logger import Logger

from chatproto.endpoints import Certificate, host_name
from chatproto.server import ChatServer
from chatproto.service import ListenerService

log = Logger()

#: What a client is told to call a server listening on every interface.
_ANY = ("0.0.0.0", "::", "")


def shown_host(host: str) -> str:
    """An address as a person types it: this machine's name for "every
    interface", an IPv6 address in brackets."""
    if host in _ANY:
        return host_name()
    return f"[{host}]" if ":" in host else host


def hint(kind: str, host: str, port: int, tls: bool, fingerprint: str | None = None) -> str:
    """The line that says how to reach one listener of ``kind`` (chat, web, irc)."""
    if kind == "web":
        if tls:
            return f"browser: open https://{host}:{port}/ (and check that its certificate is the one above)"
        return f"browser: open http://{host}:{port}/"
    if kind == "irc":
        if not tls:
            return f"IRC: irssi -c {host} -p {port}"
        pin = f" -tls_pinned_cert {fingerprint}" if fingerprint else ""
        return f"IRC: start irssi, then /connect -tls{pin} {host} {port}"
    if tls:
        return (
            f"desktop client: make client, then Chat → Connect… to {host} port {port} with TLS "
            "(trust the certificate only if it shows the fingerprint above)"
        )
    return f'desktop client: make client ARGS="--connect {host}:{port} --nick NAME"'


class ConnectHints(Service):
    """Logs the lines once the server's listeners are bound."""

    def __init__(self, server: ChatServer, certificate: Certificate | None = None) -> None:
        self.server = server
        self.certificate = certificate

    def startService(self) -> None:
        super().startService()
        d = gatherResults([listener.listening() for listener in self.server.listeners])
        d.addCallback(lambda _: self.tell())
        d.addErrback(lambda f: None)  # a listener that failed has said why already

    def tell(self) -> None:
        for text in self.lines():
            log.info("{text}", text=text)

    def lines(self) -> list[str]:
        lines = []
        certificate = self.certificate
        fingerprint = certificate.fingerprint if certificate is not None else None
        if certificate is not None:
            made = f", self-signed, made now in {certificate.cert}" if certificate.made else ""
            lines.append(f"TLS certificate SHA-256 fingerprint: {fingerprint}{made}")
        for listener in self.server.listeners:
            line = self._hint(listener, fingerprint)
            if line is not None:
                lines.append(line)
        return lines

    def _hint(self, listener: ListenerService, fingerprint: str | None) -> str | None:
        if listener.port is None:
            return None
        address = listener.port.getHost()
        if not isinstance(address, (IPv4Address, IPv6Address)):
            return None  # a Unix socket: its path is the --listen it was given
        tls = listener.description.split(":", 1)[0] == "ssl"
        return hint(self._kind(listener), shown_host(address.host), address.port, tls, fingerprint)

    def _kind(self, listener: ListenerService) -> str:
        if listener.factory is self.server.site:
            return "web"
        if listener.factory is self.server.gateway:
            return "irc"
        return "chat"
