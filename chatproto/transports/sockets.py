"""The TCP and Unix connections our listeners accept, lighter than Twisted's.

Twisted's ``tcp.Server`` makes for every connection things most are never
asked for: its log prefix and repr as strings, the peer's host stored a
second time, its session number, a bound ``fileno``, an empty write list;
and its port wraps each accepted descriptor in a Python ``socket.socket``,
a garbage-collected object three slots larger than the C socket under it.
With thousands of idle connections these are a fifth of what each costs.
The classes here are Twisted's, less those: the strings are made when
asked, the write list when something is buffered, and the port hands over
the C socket. Reading, writing, producers, half-close, abort and TLS (which
wraps the protocol, not the transport) are Twisted's own code.

:class:`ListeningReactor` is how they are used: a reactor whose
``listenTCP``, ``listenSSL`` and ``listenUNIX`` make these ports, for
``serverFromString``; everything else is the reactor's.
"""

from __future__ import annotations

import _socket
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import address, tcp, unix
from twisted.internet.interfaces import IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import reflect

#: IPv4 hosts whose string accepted connections share, at most.
HOSTS_KEPT = 4096

_hosts: dict[str, str] = {}


def _shared(host: str) -> str:
    """One string for every connection from ``host`` (a reverse proxy's or
    a NAT's thousands): it was 58 bytes each. Bounded, so that many
    addresses cost nothing kept."""
    shared = _hosts.get(host)
    if shared is None:
        if len(_hosts) >= HOSTS_KEPT:
            _hosts.clear()
        shared = _hosts[host] = host
    return shared


class _Listener(socket.socket):
    """A listening socket whose ``accept`` returns the C socket object, and
    an IPv4 peer's host as a shared string (IPv6's is made again by
    Twisted's port, from ``getnameinfo``)."""

    __slots__ = ()

    def accept(self) -> tuple[Any, Any]:
        fd, addr = self._accept()  # type: ignore[attr-defined]
        if type(addr) is tuple and len(addr) == 2:
            addr = (_shared(addr[0]), addr[1])
        return _socket.socket(self.family, self.type, self.proto, fileno=fd), addr


def _listener(made: socket.socket) -> _Listener:
    """The port's new socket as a :class:`_Listener` (same descriptor, same options)."""
    listener = _Listener(made.family, made.type, made.proto, fileno=made.detach())
    listener.setblocking(False)
    return listener


def _closed() -> int:
    return -1


class _Lazy:
    """What the connection classes share: their strings and write list on demand."""

    #: FileDescriptor.__init__ sets it on every instance; a class default does.
    _tempDataLen = 0
    _chunks: list[bytes] | None = None

    socket: Any
    protocol: Any
    client: Any

    @property
    def _tempDataBuffer(self) -> list[bytes]:
        """Twisted's list of writes not yet joined, made at the first one."""
        chunks = self._chunks
        if chunks is None:
            chunks = self._chunks = []
        return chunks

    @_tempDataBuffer.setter
    def _tempDataBuffer(self, chunks: list[bytes]) -> None:
        self._chunks = chunks or None

    @property
    def fileno(self) -> Callable[[], int]:
        """The socket's, then -1 once it is closed (Twisted deletes its own then)."""
        sock = getattr(self, "socket", None)
        return sock.fileno if sock is not None else _closed

    @fileno.deleter
    def fileno(self) -> None:
        pass  # Twisted's connectionLost deletes the one it stored; none is stored here

    @property
    def hostname(self) -> Any:
        """The peer's host (or a Unix socket's peer name): Twisted stores it twice."""
        return self.client[0]

    @hostname.setter
    def hostname(self, value: Any) -> None:
        raise AttributeError("a connection's host is its peer's")

    def logPrefix(self) -> str:
        """The protocol's prefix alone: the reactor asks for it at every
        event, and our log lines name the connection themselves. Every
        protocol here has one (ours are ``ILoggingContext``s, and so are
        Twisted's wrappers), so it is asked without a look at its interfaces."""
        protocol = getattr(self, "protocol", None)  # deleted once the connection is lost
        return protocol.logPrefix() if protocol is not None else "-"

    def __repr__(self) -> str:
        protocol = getattr(self, "protocol", None)
        return f"<{type(protocol).__name__} from {self.client[0]}>"

    def _start(self, sock: Any, protocol: Any, client: Any, reactor: Any) -> None:
        """tcp.Server.__init__ and its bases', less what is made on demand."""
        self.reactor = reactor
        self.socket = sock
        sock.setblocking(False)
        self.protocol = protocol
        self.client = client
        self.startReading()  # type: ignore[attr-defined]
        self.connected = 1


class LeanServer(_Lazy, tcp.Server):
    """``tcp.Server``, with only what a connection needs stored."""

    def __init__(
        self, sock: Any, protocol: Any, client: Any, server: Any, sessionno: int, reactor: Any
    ) -> None:
        self._start(sock, protocol, client, reactor)


class LeanServer6(LeanServer):
    _addressType = address.IPv6Address


class LeanUNIXServer(_Lazy, unix.Server):
    """``unix.Server``, with only what a connection needs stored."""

    def __init__(
        self, sock: Any, protocol: Any, client: Any, server: Any, sessionno: int, reactor: Any
    ) -> None:
        unix._SendmsgMixin.__init__(self)
        self._start(sock, protocol, (client, None), reactor)


class LeanPort(tcp.Port):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.addressFamily == socket.AF_INET6:
            self.transport = LeanServer6
        else:
            self.transport = LeanServer
        self._prefix = reflect.qual(self.factory.__class__)

    def logPrefix(self) -> str:
        """Twisted's (the factory's qualified name), made once: the reactor
        asks for it at every accept."""
        return self._prefix

    def createInternetSocket(self) -> _Listener:
        return _listener(super().createInternetSocket())


class LeanUNIXPort(unix.Port):
    transport = LeanUNIXServer

    def createInternetSocket(self) -> _Listener:
        return _listener(super().createInternetSocket())


class ListeningReactor:
    """The reactor, whose TCP, TLS and Unix listeners make lean connections."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenTCP(
        self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = ""
    ) -> LeanPort:
        p = LeanPort(port, factory, backlog, interface, self._reactor)
        p.startListening()
        return p

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> LeanPort:
        # As the reactor's: TLS is a protocol wrapped around the factory's.
        p = self.listenTCP(port, TLSMemoryBIOFactory(contextFactory, False, factory), backlog, interface)
        p._type = "TLS"
        return p

    def listenUNIX(
        self,
        address: bytes,
        factory: IProtocolFactory,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> LeanUNIXPort:
        p = LeanUNIXPort(address, factory, backlog, mode, self._reactor, wantPID)
        p.startListening()
        return p
