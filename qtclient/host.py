"""Host mode: the chatproto server running in the client's own reactor."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from chatproto.core.hub import Hub
from chatproto.limits import Limits
from chatproto.server import ChatServer, build_server


class HostedServer:
    """Start and stop the same service tree twistd runs, on one endpoint."""

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self._server: ChatServer | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def hub(self) -> Hub | None:
        return self._server.hub if self._server is not None else None

    @property
    def port(self) -> int | None:
        return self._server.port if self._server is not None else None

    def start(
        self, endpoint: str, history: str = ":memory:", name: str = "hosted", admins: tuple = (), **limits
    ) -> str:
        """Listen on ``endpoint``; returns the address. Raises ValueError on a
        bad endpoint or a port in use, with a message fit for the user."""
        if self.running:
            raise RuntimeError("the server is already running")
        try:
            server = build_server(
                self.reactor, [endpoint], history, Limits(**limits), name=name, admins=list(admins)
            )
        except Exception as e:
            raise ValueError(f"can't listen on {endpoint}: {e}") from None
        try:
            server.start()
        except Exception:
            server.hub.close()
            raise ValueError(f"can't listen on {endpoint}: {Failure().getErrorMessage()}") from None
        self._server = server
        host = server.listeners[0].port.getHost()
        return f"{host.host}:{host.port}"

    def stop(self) -> Deferred:
        """Stop listening, BYE everyone, close the store."""
        server, self._server = self._server, None
        if server is None:
            return succeed(None)
        return server.stopService()
