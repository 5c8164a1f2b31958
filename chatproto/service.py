"""Services: start and stop the room and its listening ports with twistd."""

from __future__ import annotations

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.protocol import ChatFactory, describe_address
from chatproto.room import Room

log = Logger()


class RoomService(Service):
    """On stop: store what was said, BYE everyone, then close the store."""

    def __init__(self, room: Room) -> None:
        self.room = room

    def stopService(self) -> Deferred:
        super().stopService()
        d = self.room.shutdown()
        d.addBoth(lambda _: self.room.close_store())
        return d


class ListenerService(Service):
    """Listens on one endpoint while running.

    A port that can't be bound fails ``startService`` at once, so twistd
    exits with the reason instead of running a server nobody can reach.
    """

    def __init__(self, description: str, endpoint: IStreamServerEndpoint, factory: Factory) -> None:
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        failures: list[Failure] = []
        d = self.endpoint.listen(self.factory)
        d.addCallbacks(self._listening, failures.append)
        if failures:
            log.critical(
                "can't listen on {description}: {error}",
                description=self.description,
                error=failures[0].getErrorMessage(),
            )
            failures[0].raiseException()

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        log.info(
            "listening on {description} ({address})",
            description=self.description,
            address=describe_address(port.getHost()),
        )

    def stopService(self) -> Deferred | None:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


def chat_service(room: Room, endpoints: list[tuple[str, IStreamServerEndpoint]]) -> MultiService:
    """The service tree: the room first, so it stops after the listeners."""
    top = MultiService()
    RoomService(room).setServiceParent(top)
    factory = ChatFactory(room)
    for description, endpoint in endpoints:
        ListenerService(description, endpoint, factory).setServiceParent(top)
    return top
