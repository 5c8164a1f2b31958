"""Client TLS: verify the server, or pin its certificate on first use.

The server side needs nothing here: ``--listen ssl:PORT:privateKey=..:certKey=..``.
"""

from __future__ import annotations

from dataclasses import dataclass

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

VERIFY, PIN = "verify", "pin"


@dataclass(frozen=True)
class TLSSettings:
    """``verify``: the certificate must chain to the system's trusted CAs, or
    to ``ca_file``. ``pin``: accept any certificate whose SHA-256 fingerprint
    the user trusted for this host:port before (trust on first use)."""

    mode: str = VERIFY
    ca_file: str | None = None


def fingerprint_of(certificate) -> str:
    """Colon-separated SHA-256 of a pyOpenSSL X509 or a Twisted Certificate."""
    x509 = certificate.original if isinstance(certificate, ssl.Certificate) else certificate
    return x509.digest("sha256").decode("ascii")


def verifying_creator(hostname: str, ca_file: str | None = None):
    """Checks the chain and the name, as a browser would."""
    if ca_file is not None:
        with open(ca_file, "rb") as f:
            trust = ssl.Certificate.loadPEM(f.read())
    else:
        trust = ssl.platformTrust()
    return ssl.optionsForClientTLS(hostname, trustRoot=trust)


@implementer(IOpenSSLClientConnectionCreator)
class PinningCreator:
    """Completes the handshake with any certificate; the caller must compare
    the peer's fingerprint with the pinned one before sending a byte."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self._context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        self._context.set_min_proto_version(SSL.TLS1_2_VERSION)
        self._context.set_verify(SSL.VERIFY_NONE, lambda *args: True)

    def clientConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if not _is_address(self.hostname):
            connection.set_tlsext_host_name(self.hostname.encode("idna"))
        return connection


def creator_for(hostname: str, settings: TLSSettings):
    if settings.mode == PIN:
        return PinningCreator(hostname)
    return verifying_creator(hostname, settings.ca_file)


def _is_address(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
