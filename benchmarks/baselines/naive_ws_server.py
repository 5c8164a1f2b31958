"""Baseline: the obvious WebSocket relay on ``twisted.web.websocket``.

Speaks the LOGIN/SAY -> WELCOME/MESSAGE subset of the protocol over
WebSocket binary messages, as naive_server does over Int32 frames: every
packet encoded with json.dumps and framed by the WebSocket library once per
recipient, no history, no limits, no backpressure.

    python -m benchmarks.baselines.naive_ws_server PORT
"""

import json
import sys
import time

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.websocket import WebSocketResource


class Relay:
    clients: list = []
    seq = 0


class NaiveSocket:
    def __init__(self) -> None:
        self.nick = None
        self.transport = None

    def negotiationStarted(self, transport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def send(self, kind, body) -> None:
        self.transport.sendBytesMessage(bytes([kind]) + json.dumps(body).encode())

    def bytesMessageReceived(self, data) -> None:
        kind, body = data[0], json.loads(bytes(data[1:]))
        if kind == 0x01:
            self.nick = body["nick"]
            Relay.clients.append(self)
            welcome = {"nick": self.nick, "id": len(Relay.clients), "resume": "", "server": "naive-ws"}
            self.send(0x81, {**welcome, "motd": "", "peers": [], "pending": [], "history": [], "limits": {}})
        elif kind == 0x02 and self.nick:
            Relay.seq += 1
            message = {"seq": Relay.seq, "ts": time.time(), "from": self.nick, "text": body["text"]}
            for client in Relay.clients:
                out = dict(message)
                if client is self and "ref" in body:
                    out["ref"] = body["ref"]
                client.send(0x82, out)

    def textMessageReceived(self, text) -> None:
        pass

    def pongReceived(self, payload) -> None:
        pass

    def connectionLost(self, reason) -> None:
        if self in Relay.clients:
            Relay.clients.remove(self)


class Sockets:
    def buildProtocol(self, request):
        return NaiveSocket()


if __name__ == "__main__":
    root = Resource()
    root.putChild(b"ws", WebSocketResource(Sockets()))
    port = reactor.listenTCP(int(sys.argv[1]), Site(root), interface="127.0.0.1", backlog=4096)
    print(f"listening on {port.getHost().port}", flush=True)
    reactor.run()
