"""What ``--web`` serves: the browser client's files at ``/`` and the
WebSocket at ``/ws``, from one ``twisted.web`` Site.

Every answer carries a Content-Security-Policy that lets the page run only
its own scripts and talk only to its own server; directories are never
listed. Every HTTP connection holds a place in ``--max-clients`` and
``--max-per-address`` from its accept and has one deadline per request
(:class:`ChatChannel`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import ForbiddenResource, Resource
from twisted.web.server import Request, Site
from twisted.web.static import File

from chatproto.core.hub import Hub
from chatproto.core.timers import Deadline
from chatproto.transports.file_http import FilesResource
from chatproto.transports.file_uploads import ChatRequest
from chatproto.transports.forwarded import TrustedProxies
from chatproto.transports.policy import chat_transport, describe_address
from chatproto.transports.websocket import ChatSocketResource, WebSocketChatProtocol

log = Logger()

#: The page, as it is in the repository: no build step.
PAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "webclient")

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}


class PageFiles(File):
    """The page's files; a folder without an index is refused, not listed."""

    contentTypes = TYPES

    def directoryListing(self) -> Resource:
        return ForbiddenResource("no listing")


def security_headers(request: Request) -> None:
    """Only the page's own scripts and styles; sockets only to this server."""
    host = request.getHeader("host") or ""
    sockets = f"wss://{host}" if request.isSecure() else f"ws://{host} wss://{host}"
    request.setHeader(
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {sockets}; manifest-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'",
    )
    request.setHeader("x-content-type-options", "nosniff")
    request.setHeader("referrer-policy", "no-referrer")


def refusal(reason: str) -> bytes:
    """What a connection refused at accept reads before it is closed."""
    body = f"{reason}\n".encode()
    return (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    ) + body


class ChatChannel(HTTPChannel):
    """One HTTP connection to ``--web``, held to the chat connections' limits.

    - It holds a place in ``max_clients`` and ``max_per_address`` from the
      moment it is accepted (``Hub.reserve``); a connection refused gets a
      503 naming the reason (``server_full``, ``too_many_connections``,
      ``banned``) and is closed at once, as Int32 says BYE.
    - Each request has one deadline, ``login_timeout`` from when the
      connection is ready for it (accepted, or the previous response
      finished) until its response is finished. Bytes don't move it, where
      Twisted's idle timeout starts again at every byte: a request trickled
      a byte at a time is closed at its deadline.
    - A WebSocket upgrade ends the deadline and passes the place to the
      chat connection (:meth:`upgraded`), whose login timeout starts then;
      from then on its bytes go to the chat connection (:meth:`hand_over`).
    """

    site: WebSite  # set by the site that builds it (Site.buildProtocol)
    _host = ""
    _place = False  # holds a place in the limits
    _refused = False
    _deadline: Deadline | None = None
    _handed_to: WebSocketChatProtocol | None = None  # what a WebSocket upgrade handed the connection to

    def connectionMade(self) -> None:
        super().connectionMade()
        hub = self.site.hub
        transport = chat_transport(self.transport)
        peer = transport.getPeer()
        self._host = getattr(peer, "host", "") or ""
        if self.site.proxies.trusted(self._host):
            self._host = ""  # a proxy of ours: its clients are counted once their requests name them
        refused = hub.reserve(self._host, describe_address(peer))
        if refused is not None:
            self._refused = True
            hub.counters.disconnects[refused] += 1
            transport.write(refusal(refused))
            self.loseConnection()
            return
        self._place = True
        self._start_deadline()

    def dataReceived(self, data: bytes) -> None:
        if self._handed_to is not None:
            self._handed_to.dataReceived(data)
        elif not self._refused:
            super().dataReceived(data)

    def requestDone(self, request: Request) -> None:
        # The next request on this connection gets a deadline of its own
        # (and may be one that was pipelined, handled within this call).
        if self._place:
            self._start_deadline()
        super().requestDone(request)

    def long_request(self) -> None:
        """An upload or a download with its answer under way: it may take
        longer than a request's deadline (the connection still holds its
        place in the limits; the next request gets a deadline again)."""
        self._stop_deadline()

    def upgraded(self) -> bool:
        """The request became a WebSocket: no deadline from here on. True if
        the connection's place passes to the chat connection."""
        self._stop_deadline()
        place, self._place = self._place, False
        return place

    def hand_over(self, protocol: WebSocketChatProtocol) -> None:
        """After a WebSocket upgrade: the connection's bytes, and its end,
        go to ``protocol`` from now on (HTTP is done with it)."""
        self._handed_to = protocol
        protocol.makeConnection(self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._handed_to is not None:
            self._handed_to.connectionLost(reason)
            return
        self._stop_deadline()
        if self._place:
            self._place = False
            self.site.hub.release(self._host)
        super().connectionLost(reason)

    def _start_deadline(self) -> None:
        self._stop_deadline()
        hub = self.site.hub
        self._deadline = hub.timers.call_later(hub.limits.login_timeout, self._deadline_passed)

    def _stop_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        log.info(
            "HTTP connection from {address}: no request answered within {t}s, closed",
            address=describe_address(chat_transport(self.transport).getPeer()),
            t=self.site.hub.limits.login_timeout,
        )
        self.timeoutConnection()  # Twisted's: close, and abort if that takes too long


class WebSite(Site):
    """A Site whose every answer gets :func:`security_headers`, on
    :class:`ChatChannel` connections."""

    # Twisted types HTTPFactory.protocol as the factory of its HTTP/2-
    # negotiating wrapper (_GenericHTTPChannelProtocol) alone; a Site builds
    # an HTTPChannel subclass given here just as well.
    protocol = ChatChannel  # type: ignore[assignment]
    requestFactory = ChatRequest

    def __init__(self, resource: Resource, hub: Hub, proxies: TrustedProxies) -> None:
        # No idle timeout of Twisted's: ChatChannel's deadline replaces it.
        super().__init__(resource, timeout=None, reactor=hub.clock)
        self.hub = hub
        self.proxies = proxies

    def getResourceFor(self, request: Request) -> Resource:
        security_headers(request)
        return super().getResourceFor(request)


def web_site(hub: Hub, origins: Iterable[str] = (), page: str = PAGE, trusted: Iterable[str] = ()) -> Site:
    """The Site one ``--web`` endpoint serves. ``origins`` are other pages'
    origins allowed to open the WebSocket (``--web-origin``); ``trusted``
    the reverse proxies whose X-Forwarded-For names the client (``--trusted-proxy``)."""
    proxies = TrustedProxies(trusted)
    root = PageFiles(page)
    origins_ = frozenset(o.lower().rstrip("/") for o in origins)
    root.putChild(b"ws", ChatSocketResource(hub, origins_, proxies))
    if hub.files is not None:
        root.putChild(b"files", FilesResource(hub.files))
    site = WebSite(root, hub, proxies)
    site.displayTracebacks = False
    site.noisy = False
    return site
