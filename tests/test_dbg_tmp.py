from twisted.internet import defer
from chatproto import codec
from tests.test_cluster_conversations import Conversations

class Dbg(Conversations):
    @defer.inlineCallbacks
    def test_dbg(self):
        a = yield self.node(history_replay=3)
        alice = yield self.member("alice", a)
        for i in range(1, 11):
            alice.send(codec.Say(f"m{i}", room="side"))
        yield self.seen(alice, 10)
        for seq in (2, 5, 3, 9):
            alice.send(codec.Edit("side", seq, f"m{seq} edited"))
        alice.send(codec.Delete("side", 5))
        alice.send(codec.React("side", 1, "👍"))
        try:
            while True:
                p = yield alice.next(timeout=1)
                print("\\nGOT", p)
        except Exception as e:
            print("EXC", repr(e))
        raw = yield self.raw_redis(a.hub.peers.store.client)
        print(raw.decode())
        print(a.hub.peers._pending, a.hub.peers._held, a.hub.peers._queue, a.hub.peers._deciding)
