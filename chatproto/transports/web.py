"""What ``--web`` serves: the browser client's files at ``/`` and the
WebSocket at ``/ws``, from one ``twisted.web`` Site.

Every answer carries a Content-Security-Policy that lets the page run only
its own scripts and talk only to its own server; directories are never
listed.
"""

from __future__ import annotations

import os

from twisted.web.resource import ForbiddenResource, Resource
from twisted.web.server import Request, Site
from twisted.web.static import File

from chatproto.core.hub import Hub
from chatproto.transports.websocket import ChatSocketResource

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


class WebSite(Site):
    """A Site whose every answer gets :func:`security_headers`."""

    def getResourceFor(self, request: Request) -> Resource:
        security_headers(request)
        return super().getResourceFor(request)


def web_site(hub: Hub, origins: list[str] = (), page: str = PAGE) -> Site:
    """The Site one ``--web`` endpoint serves. ``origins`` are other pages'
    origins allowed to open the WebSocket (``--web-origin``)."""
    root = PageFiles(page)
    root.putChild(b"ws", ChatSocketResource(hub, frozenset(o.lower().rstrip("/") for o in origins)))
    # An HTTP connection that says nothing is closed as a pending one is:
    # before the upgrade it counts against no chat limit.
    site = WebSite(root, timeout=hub.limits.login_timeout)
    site.displayTracebacks = False
    site.noisy = False
    return site
