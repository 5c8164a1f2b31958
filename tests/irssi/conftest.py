"""What the real IRC clients' tests share: a server process, a
desktop-protocol member of #general watching, and tmux terminals, each
stopped after the test whatever happened."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from chatproto import codec
from tests.processes import Server, TcpPeer, Tmux


@pytest.fixture
def history(tmp_path) -> str:
    return str(tmp_path / "history.sqlite3")


@pytest.fixture
def chat_server(history) -> Iterator[Callable[..., Server]]:
    """Starts the server on ``history`` with the given options (once)."""
    started: list[Server] = []

    def start(*options: str) -> Server:
        server = Server(history, *options)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def peers() -> Iterator[Callable[..., TcpPeer]]:
    """Desktop-protocol clients: ``peers(port, nick, password=...)``."""
    opened: list[TcpPeer] = []

    def connect(port: int, nick: str, **options: str) -> TcpPeer:
        peer = TcpPeer(port, nick, **options)
        opened.append(peer)
        return peer

    yield connect
    for peer in opened:
        peer.close()


@pytest.fixture
def desk_in_general(peers) -> Callable[[Server], TcpPeer]:
    """``desk``, a desktop-protocol member of #general, to watch the IRC client."""

    def join(server: Server) -> TcpPeer:
        desk = peers(server.port, "desk")
        desk.send(codec.Join("general"))
        desk.expect(codec.RoomState)
        return desk

    return join


@pytest.fixture
def terminal(tmp_path) -> Iterator[Callable[..., Tmux]]:
    """A program in tmux: ``terminal(command, width=...)``."""
    opened: list[Tmux] = []

    def open_(command: str, **options: int) -> Tmux:
        tmux = Tmux(str(tmp_path), command, **options)
        opened.append(tmux)
        return tmux

    yield open_
    for tmux in opened:
        tmux.close()
