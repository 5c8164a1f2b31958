"""Where a server listens when it is not told: on loopback for whoever sits
at the machine, or (``--public``) on every interface, over TLS only.

Nothing is ever exposed beyond the machine in plain text by default: a
plain endpoint on every interface has to be written out (``--listen tcp:7777``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from twisted.internet.endpoints import quoteStringArgument

from chatproto import certs

#: The usual ports: the desktop protocol, the page, IRC (and IRC over TLS).
CHAT_PORT, WEB_PORT, IRC_PORT = 7777, 8080, 6667
WEB_TLS_PORT, IRC_TLS_PORT = 8443, 6697


@dataclass(frozen=True)
class Endpoints:
    """Endpoint strings for ``--listen``, ``--web`` and ``--irc``."""

    listen: list[str]
    web: list[str]
    irc: list[str]


LOCAL = Endpoints(
    [f"tcp:{CHAT_PORT}:interface=127.0.0.1"],
    [f"tcp:{WEB_PORT}:interface=127.0.0.1"],
    [f"tcp:{IRC_PORT}:interface=127.0.0.1"],
)


@dataclass(frozen=True)
class Certificate:
    """The TLS key and certificate ``--public`` serves, and the certificate's
    SHA-256 fingerprint (what clients that trust on first use show)."""

    key: str
    cert: str
    fingerprint: str
    made: bool  # self-signed just now


def public(certificate: Certificate) -> Endpoints:
    """Every interface, TLS only, the page and IRC on their TLS ports."""
    key, cert = quoteStringArgument(certificate.key), quoteStringArgument(certificate.cert)
    files = f"privateKey={key}:certKey={cert}"
    return Endpoints(
        [f"ssl:{CHAT_PORT}:{files}"], [f"ssl:{WEB_TLS_PORT}:{files}"], [f"ssl:{IRC_TLS_PORT}:{files}"]
    )


def metrics_endpoint(description: str) -> str:
    """Where ``--metrics`` listens: a bare port, or a TCP endpoint that names
    no interface, on loopback only (a scrape reads every session's count;
    serving it to the world has to be said: ``interface=0.0.0.0``)."""
    if description.isdigit():
        return f"tcp:{description}:interface=127.0.0.1"
    kind = description.split(":", 1)[0]
    if kind in ("tcp", "tcp6") and "interface=" not in description:
        return f"{description}:interface={'::1' if kind == 'tcp6' else '127.0.0.1'}"
    return description


def default_files(folder: str) -> tuple[str, str]:
    """``key.pem`` and ``cert.pem`` in ``folder`` (where ``make cert`` puts them)."""
    return os.path.join(folder, "key.pem"), os.path.join(folder, "cert.pem")


def certificate(key: str, cert: str) -> Certificate:
    """The pair at ``key`` and ``cert``, made self-signed for this machine's
    name if neither exists; ValueError if only one does."""
    cert_pem, made = certs.load_or_make(key, cert, host_name())
    return Certificate(key, cert, certs.fingerprint(cert_pem), made)


def host_name() -> str:
    """This machine's name, for what is said to people on other machines."""
    return socket.gethostname() or "localhost"
