"""Baseline: Twisted's classic LineReceiver chat, the same bytes to everyone.

A line is a message; there is no login, no framing beyond newlines, no JSON,
no history and no limits. It measures how fast Twisted writes one buffer to
many transports.

    python -m benchmarks.baselines.line_server PORT
"""

import sys

from twisted.internet import protocol, reactor
from twisted.protocols.basic import LineReceiver


class LineChat(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 65536

    def __init__(self, factory):
        self.factory = factory

    def connectionMade(self):
        self.factory.clients.add(self)

    def connectionLost(self, reason):
        self.factory.clients.discard(self)

    def lineReceived(self, line):
        for client in self.factory.clients:
            client.sendLine(line)


class LineFactory(protocol.Factory):
    def __init__(self):
        self.clients = set()

    def buildProtocol(self, addr):
        return LineChat(self)


if __name__ == "__main__":
    port = reactor.listenTCP(int(sys.argv[1]), LineFactory(), interface="127.0.0.1", backlog=4096)
    print(f"listening on {port.getHost().port}", flush=True)
    reactor.run()
