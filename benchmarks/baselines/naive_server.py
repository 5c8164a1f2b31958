"""Baseline: the obvious Int32StringReceiver chat server.

Speaks the same LOGIN/SAY -> WELCOME/MESSAGE subset of the protocol, but
encodes every packet with json.dumps once per recipient and keeps no
history, no limits and no backpressure.

    python -m benchmarks.baselines.naive_server PORT
"""

import json
import sys
import time

from twisted.internet import protocol, reactor
from twisted.protocols.basic import Int32StringReceiver


class NaiveChat(Int32StringReceiver):
    MAX_LENGTH = 65536

    def __init__(self, factory):
        self.factory = factory
        self.nick = None

    def send(self, kind, body):
        self.sendString(bytes([kind]) + json.dumps(body).encode())

    def stringReceived(self, data):
        kind, body = data[0], json.loads(data[1:])
        if kind == 0x01:
            self.nick = body["nick"]
            self.factory.clients.append(self)
            self.send(
                0x81,
                {
                    "nick": self.nick,
                    "id": len(self.factory.clients),
                    "resume": "",
                    "server": "naive",
                    "motd": "",
                    "peers": [],
                    "pending": [],
                    "history": [],
                    "limits": {},
                },
            )
        elif kind == 0x02 and self.nick:
            self.factory.seq += 1
            message = {"seq": self.factory.seq, "ts": time.time(), "from": self.nick, "text": body["text"]}
            for client in self.factory.clients:
                out = dict(message)
                if client is self and "ref" in body:
                    out["ref"] = body["ref"]
                client.send(0x82, out)
        elif kind == 0x04:
            self.send(0x87, {"token": body.get("token")})

    def connectionLost(self, reason):
        if self in self.factory.clients:
            self.factory.clients.remove(self)


class NaiveFactory(protocol.Factory):
    def __init__(self):
        self.clients = []
        self.seq = 0

    def buildProtocol(self, addr):
        return NaiveChat(self)


if __name__ == "__main__":
    port = reactor.listenTCP(int(sys.argv[1]), NaiveFactory(), interface="127.0.0.1", backlog=4096)
    print(f"listening on {port.getHost().port}", flush=True)
    reactor.run()
