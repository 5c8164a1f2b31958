"""Host mode: the chatproto server running in the client's own reactor."""

from __future__ import annotations

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString

from chatproto.limits import Limits
from chatproto.protocol import ChatFactory
from chatproto.room import Room
from chatproto.service import ListenerService, RoomService
from chatproto.store import SQLiteHistory


class HostedServer:
    """Start and stop a room plus one listener, the same services twistd runs."""

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.room: Room | None = None
        self._services: list = []

    @property
    def running(self) -> bool:
        return self.room is not None

    def start(self, endpoint: str, history: str = ":memory:", name: str = "hosted", **limits) -> str:
        """Listen on ``endpoint``; returns the address. Raises on a bad endpoint
        or a port in use, with a message fit for the user."""
        if self.running:
            raise RuntimeError("the server is already running")
        store = SQLiteHistory(history)
        room = Room(store, self.reactor, Limits(**limits), name=name)
        try:
            listener = ListenerService(endpoint, serverFromString(self.reactor, endpoint), ChatFactory(room))
            listener.startService()
        except Exception as e:
            store.close()
            raise ValueError(f"can't listen on {endpoint}: {e}") from None
        keeper = RoomService(room)
        keeper.startService()
        self.room = room
        self._services = [listener, keeper]
        host = listener.port.getHost()
        return f"{host.host}:{host.port}"

    @property
    def port(self) -> int | None:
        return self._services[0].port.getHost().port if self.running else None

    def stop(self) -> Deferred:
        """Stop listening, BYE everyone, close the store."""
        if not self.running:
            return succeed(None)
        listener, keeper = self._services
        self._services = []
        self.room = None
        stopping = [maybeDeferred(listener.stopService), maybeDeferred(keeper.stopService)]
        return gatherResults(stopping).addCallback(lambda _: None)
