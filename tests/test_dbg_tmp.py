from twisted.internet import defer
from chatproto import codec
from tests.test_cluster_conversations import Conversations

class Dbg(Conversations):
    @defer.inlineCallbacks
    def test_dbg(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.member("alice", a)
        bob = yield self.member("bob", b)
        bob.send(codec.Say("draft 0", "s", room="side"))
        yield bob.expect(codec.MessagePacket)
        alice.send(codec.Say("react to me", "s", room="side"))
        yield self.answer(alice, "s")
        emoji = ["👍", "🎉", "❤️", "😀", "🔥", "👀", "🙏", "✅"]
        for i in range(1, 26):
            bob.send(codec.Edit("side", 1, f"draft {i}", f"e{i}"))
            if i <= len(emoji):
                bob.send(codec.React("side", 2, emoji[i - 1], ref=f"r{i}"))
        try:
            while True:
                p = yield bob.next(timeout=1)
                print("\\nGOT", str(p)[:150])
        except Exception as e:
            print("EXC", repr(e))
        print(b.hub.peers._pending, b.hub.peers._queue, b.hub.peers._deciding)
        for p in b.hub.peers._pending.values(): print(p.remaining, p.outcomes)
