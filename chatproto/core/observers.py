"""Who is told what happened on the server (the host's console, tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from chatproto.core.connection import HubEvent

log = Logger()


class Observers:
    """The server's observers; one failing never stops the others or the server."""

    def __init__(self) -> None:
        self._observers: list[Callable[[HubEvent], None]] = []

    def append(self, observer: Callable[[HubEvent], None]) -> None:
        self._observers.append(observer)

    def remove(self, observer: Callable[[HubEvent], None]) -> None:
        self._observers.remove(observer)

    def notify(self, kind: str, id: int, **fields: Any) -> None:
        if not self._observers:
            return
        event = HubEvent(kind, id, **fields)
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                log.failure("hub observer failed on {event}", event=event)
