"""The IRC gateway's conversations (docs/protocol.md 17.8, section 19) on
StringTransport and task.Clock: IRCv3 tags, TAGMSG, REDACT, away-notify,
edits, reactions, typing and direct conversations as queries, both ways."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.transports.irc import IrcConnection, parse
from chatproto.transports.irc_conversations import (
    escape_tag,
    query_target,
    unescape_tag,
)
from chatproto.transports.ircnames import channel, room_of
from tests.harness import Server
from tests.test_irc import PASSWORD, IrcPeer, in_room, registered

ALL = "message-tags echo-message draft/message-redaction away-notify server-time"
#: All but server-time: lines without a time tag are easier to compare.
UNTIMED = "message-tags echo-message draft/message-redaction away-notify"


def message(seq: int, sender: str, text: str, **fields: Any) -> codec.Message:
    return codec.Message(seq, 1764000000.1, sender, text, **fields)


class Recording:
    """The packets an IRC connection hands to the core, instead of handing them."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.packets: list[Any] = []
        case.patch(IrcConnection, "_packet", lambda _self, packet: self.packets.append(packet))

    def take(self) -> list[Any]:
        packets, self.packets = self.packets, []
        return packets


class Pure(SynchronousTestCase):
    def test_tag_values_escape_and_unescape(self):
        for value in ("plain", "a;b c\\d", "line\r\nbreak", "🎉", ""):
            self.assertEqual(unescape_tag(escape_tag(value)), value)
        self.assertEqual(escape_tag("a b;c"), "a\\sb\\:c")
        self.assertEqual(unescape_tag("x\\"), "x")
        self.assertEqual(parse("@+draft/react=a\\sb;+x :n TAGMSG #a")[0], {"+draft/react": "a b", "+x": ""})

    def test_conversations_are_queries_or_amp_channels(self):
        self.assertEqual(channel("@alice+bob+Ärger"), "&alice+bob+xn--rger-zja")
        self.assertEqual(room_of("&alice+bob+xn--rger-zja"), "@alice+bob+Ärger")
        self.assertEqual(room_of("#dev"), "dev")
        self.assertEqual(query_target("@alice+bob", "bob"), "alice")
        self.assertEqual(query_target("@alice+bob", "ALICE"), "bob")
        self.assertEqual(
            query_target("@alice+bob", "admin", "alice"), "bob", "not a participant: by the author"
        )


class Advertised(SynchronousTestCase):
    def test_caps_isupport_and_tagmsg_is_a_command(self):
        server = Server()
        peer = IrcPeer(server)
        peer.send("CAP LS 302")
        caps = peer.commands()[0][1][-1].split()
        for cap in ("away-notify", "draft/message-redaction", "message-tags"):
            self.assertIn(cap, caps)
        lines = peer.register("alice", "message-tags")
        isupport = next(parse(text)[3] for text in lines if parse(text)[2] == "005")
        self.assertIn("CLIENTTAGDENY=*,-draft/reply,-draft/react,-draft/unreact,-typing", isupport)
        self.assertIn("CHANTYPES=#&", isupport)
        in_room(server, "general", peer)
        peer.send("@+foo=bar TAGMSG #general", "TAGMSG #general")
        self.assertEqual(peer.lines(), [], "accepted, and dropped: no 421")
        peer.send("TAGMSG")
        self.assertEqual(peer.numerics(), ["461"])


class FromIrc(SynchronousTestCase):
    """IRC lines become the packets they mean (the core's answers are
    checked end to end in Live below)."""

    def setUp(self):
        self.server = Server()
        (self.alice,) = registered(self.server, "alice", caps=ALL)
        in_room(self.server, "general", self.alice)
        self.core = Recording(self)

    def test_a_reply_tag_is_say_reply(self):
        self.alice.send("@+draft/reply=7 PRIVMSG #general :me too", "PRIVMSG #general :plain")
        self.assertEqual(
            self.core.take(),
            [
                codec.Say("me too", "PRIVMSG #general", "general", 7),
                codec.Say("plain", "PRIVMSG #general", "general", None),
            ],
        )
        self.alice.send("@+draft/reply=x PRIVMSG #general :not a msgid")
        self.assertEqual(self.core.take()[0].reply, None)

    def test_tagmsg_is_react_unreact_and_typing(self):
        self.alice.send(
            "@+draft/react=🎉;+draft/reply=8 TAGMSG #general",
            "@+draft/unreact=:+1:;+draft/reply=8 TAGMSG #general",
            "@+typing=active TAGMSG #general",
            "@+typing=paused TAGMSG #general",
            "@+typing=done TAGMSG #general",
            "@+draft/react=🎉 TAGMSG #general",
        )
        ref = "TAGMSG #general"
        self.assertEqual(
            self.core.take(),
            [
                codec.React("general", 8, "🎉", True, ref=ref),
                codec.React("general", 8, ":+1:", False, ref=ref),
                codec.Typing("general", True, ref="TYPING #general"),
                codec.Typing("general", False, ref="TYPING #general"),
            ],
            "paused sends nothing; a reaction needs +draft/reply",
        )

    def test_redact_is_delete(self):
        self.alice.send("REDACT #general 7 :oops", "REDACT #general msgid=8")
        self.assertEqual(
            self.core.take(),
            [
                codec.Delete("general", 7, ref="REDACT #general 7"),
                codec.Delete("general", 8, ref="REDACT #general msgid=8"),
            ],
        )
        self.alice.send("REDACT #general seven", "REDACT bob 7", "REDACT #general")
        self.assertEqual(
            self.alice.commands(),
            [
                ("FAIL", ["REDACT", "UNKNOWN_MSGID", "#general", "seven", "No such message"]),
                ("FAIL", ["REDACT", "INVALID_TARGET", "bob", "No such channel or query"]),
                ("461", ["alice", "REDACT", "Not enough parameters"]),
            ],
        )

    def test_away_is_away(self):
        self.alice.send("AWAY :lunch", "AWAY", "AWAY :")
        self.assertEqual(
            self.core.take(),
            [
                codec.Away(True, "lunch", ref="AWAY"),
                codec.Away(False, ref="AWAY"),
                codec.Away(False, ref="AWAY"),
            ],
        )

    def test_join_of_an_amp_channel_opens_the_conversation(self):
        self.alice.send("JOIN &bob+xn--rger-zja", "PART &bob+carol :bye")
        self.assertEqual(
            self.core.take(),
            [
                codec.Open(["bob", "Ärger"], ref="JOIN &bob+xn--rger-zja"),
                codec.Part("@bob+carol", "bye", ref="PART &bob+carol"),
            ],
        )


class ToIrc(SynchronousTestCase):
    """Our packets as IRC shows them, by capability."""

    def setUp(self):
        self.server = Server()
        self.tagged, self.plain = registered(self.server, "alice", "carol", caps=ALL)
        self.plain.connection.rewire(self.plain.protocol.irc_wire.__class__("test", frozenset()))
        in_room(self.server, "general", self.tagged, self.plain)

    def both(self, packet: Any) -> tuple[list[str], list[str]]:
        for peer in (self.tagged, self.plain):
            peer.connection.send(packet)
        return self.tagged.lines(), self.plain.lines()

    def test_a_reply_carries_draft_reply(self):
        said = codec.MessagePacket(
            9, 1764000000.1, "bob", "yes", room="general", reply=codec.Quote(8, "carol", "ok?")
        )
        tagged, plain = self.both(said)
        self.assertEqual(
            tagged,
            ["@time=2025-11-24T16:00:00.100Z;msgid=9;+draft/reply=8 :bob!bob@chat PRIVMSG #general :yes"],
        )
        self.assertEqual(plain, [":bob!bob@chat PRIVMSG #general :yes"])

    def test_an_edit_is_a_new_line_that_says_so(self):
        edited = message(8, "bob", "shipped", edited=1764000003.5, rev=1)
        tagged, plain = self.both(codec.Changed("general", "edit", "bob", edited))
        tags = "@time=2025-11-24T16:00:03.500Z;+draft/reply=8"
        self.assertEqual(tagged, [f"{tags} :bob!bob@chat PRIVMSG #general :(edited) shipped"])
        self.assertEqual(plain, [":bob!bob@chat PRIVMSG #general :(edited) shipped"])

    def test_a_deletion_is_redact_or_a_notice(self):
        gone = message(7, "bob", "", deleted=True, deleted_by="carol", rev=3)
        tagged, plain = self.both(codec.Changed("general", "delete", "carol", gone))
        self.assertEqual(tagged, [":carol!carol@chat REDACT #general :7"])
        self.assertEqual(plain, [":carol!carol@chat NOTICE #general :(deleted message 7 from bob)"])

    def test_a_reaction_is_tagmsg_to_message_tags_clients(self):
        on = message(8, "alice", "hi", reactions=[codec.Reaction("🎉", ["bob"])], rev=2)
        tagged, plain = self.both(codec.Changed("general", "react", "bob", on, emoji="🎉", on=True))
        self.assertEqual(tagged, ["@+draft/react=🎉;+draft/reply=8 :bob!bob@chat TAGMSG :#general"])
        self.assertEqual(plain, [])
        off = message(8, "alice", "hi", rev=3)
        tagged, _ = self.both(codec.Changed("general", "react", "bob", off, emoji="🎉", on=False))
        self.assertEqual(tagged, ["@+draft/unreact=🎉;+draft/reply=8 :bob!bob@chat TAGMSG :#general"])
        again = message(8, "alice", "hi", rev=3)
        tagged, _ = self.both(codec.Changed("general", "react", "bob", again, "r1", "🎉", False))
        self.assertEqual(
            tagged,
            ["@+draft/unreact=🎉;+draft/reply=8 :bob!bob@chat TAGMSG :#general"],
            "the sender's own copy (echo-message) says what everyone else's said",
        )

    def test_typing_is_tagmsg_and_never_ones_own(self):
        tagged, plain = self.both(codec.TypingNotice("general", "bob", True))
        self.assertEqual(tagged, ["@+typing=active :bob!bob@chat TAGMSG :#general"])
        self.assertEqual(plain, [])
        tagged, _ = self.both(codec.TypingNotice("general", "bob", False))
        self.assertEqual(tagged, ["@+typing=done :bob!bob@chat TAGMSG :#general"])
        tagged, _ = self.both(codec.TypingNotice("general", "alice", True))
        self.assertEqual(tagged, [])

    def test_status_is_away_notify_and_done_is_305_306(self):
        bob = IrcPeer(self.server)
        bob.register("bob")
        in_room(self.server, "general", bob)
        in_room(self.server, "dev", bob, self.tagged)
        self.tagged.lines(), self.plain.lines()
        for room in ("general", "dev"):
            self.tagged.connection.send(codec.Status(room, "bob", "lunch"))
        self.assertEqual(
            self.tagged.lines(), [":bob!bob@chat AWAY :lunch"], "once, though two rooms are shared"
        )
        tagged, plain = self.both(codec.Status("general", "bob", None))
        self.assertEqual((tagged, plain), ([":bob!bob@chat AWAY"], []))
        tagged, _ = self.both(codec.Status("general", "bob", ""))
        self.assertEqual(tagged, [":bob!bob@chat AWAY :Away"])
        tagged, _ = self.both(codec.Done("away", "alice", ref="AWAY"))
        self.assertEqual([parse(t)[2] for t in tagged], ["306"])
        tagged, _ = self.both(codec.Done("back", "alice", ref="AWAY"))
        self.assertEqual([parse(t)[2] for t in tagged], ["305"])

    def test_joined_while_away_and_conversations_as_queries_and_amp_channels(self):
        tagged, plain = self.both(codec.Joined(5, "bob", "general", away="lunch"))
        self.assertEqual(tagged, [":bob!bob@chat JOIN :#general", ":bob!bob@chat AWAY :lunch"])
        self.assertEqual(plain, [":bob!bob@chat JOIN :#general"])
        tagged, _ = self.both(codec.Joined(5, "bob", "@alice+bob"))
        self.assertEqual(tagged, [], "a query has no JOIN")
        said = codec.MessagePacket(3, 1764000000.1, "bob", "psst", room="@alice+bob")
        _, plain = self.both(said)
        self.assertEqual(plain, [":bob!bob@chat PRIVMSG alice :psst"])
        mine = codec.MessagePacket(4, 1764000000.1, "alice", "from my phone", room="@alice+bob")
        _, plain = self.both(mine)
        self.assertEqual(plain, [":alice!alice@chat PRIVMSG bob :from my phone"], "another device's")
        group = codec.MessagePacket(5, 1764000000.1, "bob", "all", room="@alice+bob+carol")
        _, plain = self.both(group)
        self.assertEqual(plain, [":bob!bob@chat PRIVMSG &alice+bob+carol :all"])
        tagged, _ = self.both(codec.TypingNotice("@alice+bob", "bob", True))
        self.assertEqual(tagged, ["@+typing=active :bob!bob@chat TAGMSG :alice"])


def account(server: Server, nick: str) -> None:
    """``nick`` registered as an account (then logged out)."""
    (tcp,) = server.logged_in(nick, version=2)
    tcp.send(codec.AccountRequest("register", PASSWORD))
    tcp.send(codec.Quit())
    server.flush()


def tcp_account(server: Server, nick: str):
    """A desktop client logged in to its account ``nick``."""
    account(server, nick)
    peer = server.peer()
    peer.login(nick, version=2, password=PASSWORD)
    server.flush()
    peer.received()
    return peer


def irc_account(server: Server, nick: str, caps: str = UNTIMED) -> IrcPeer:
    account(server, nick)
    peer = IrcPeer(server)
    peer.register(nick, caps, password=PASSWORD)
    assert server.hub.session_for(nick).account
    return peer


def of(packets: list, kind: type) -> list:
    return [p for p in packets if isinstance(p, kind)]


class WithTheCore(SynchronousTestCase):
    """Both ways through the real core: IRC, and a desktop client (version 2)."""

    def setUp(self):
        self.server = Server()
        self.alice, self.carol = registered(self.server, "alice", "carol", caps=UNTIMED)
        in_room(self.server, "general", self.alice, self.carol)
        (self.desk,) = self.server.logged_in("desk", version=2)
        self.desk.join("general")
        self.server.flush()
        self.desk.received()
        self.alice.lines(), self.carol.lines()

    def desk_says(self, text: str, **fields: Any) -> codec.MessagePacket:
        self.desk.send(codec.Say(text, "d", "general", **fields))
        (said,) = of(self.desk.received(), codec.MessagePacket)
        self.alice.lines(), self.carol.lines()
        return said

    def test_replies_both_ways(self):
        said = self.desk_says("is 2.1 out?")
        self.alice.send(f"@+draft/reply={said.seq} PRIVMSG #general :yes")
        (got,) = of(self.desk.received(), codec.MessagePacket)
        self.assertEqual((got.text, got.reply.seq, got.reply.sender), ("yes", said.seq, "desk"))
        (line,) = self.carol.lines()
        self.assertEqual(parse(line)[0]["+draft/reply"], str(said.seq))
        self.alice.lines()
        self.alice.send("@+draft/reply=999 PRIVMSG #general :to nothing")
        self.assertIn("no_such_message", self.alice.lines()[0])

    def test_an_edit_reaches_irc_as_a_line_that_says_so(self):
        said = self.desk_says("shiped")
        self.desk.send(codec.Edit("general", said.seq, "shipped", ref="e"))
        self.server.flush()
        (line,) = self.alice.lines()
        self.assertEqual(parse(line)[1:], ("desk!desk@chat", "PRIVMSG", ["#general", "(edited) shipped"]))

    def test_redact_deletes_and_reaches_others(self):
        self.alice.send("PRIVMSG #general :regret")
        (mine,) = of(self.desk.received(), codec.MessagePacket)
        self.alice.lines(), self.carol.lines()
        self.carol.send(f"REDACT #general {mine.seq}")
        (fail,) = self.carol.commands()
        self.assertEqual(fail[1][:4], ["REDACT", "REDACT_FORBIDDEN", "#general", str(mine.seq)])
        self.alice.send(f"REDACT #general {mine.seq} :oops")
        (gone,) = of(self.desk.received(), codec.Changed)
        self.assertEqual((gone.kind, gone.by, gone.message.deleted), ("delete", "alice", True))
        self.assertEqual(self.carol.lines(), [f":alice!alice@chat REDACT #general :{mine.seq}"])
        self.assertEqual(
            self.alice.lines(), [f":alice!alice@chat REDACT #general :{mine.seq}"], "echo-message"
        )
        self.alice.send(f"REDACT #general {mine.seq}")
        (fail,) = self.alice.commands()
        self.assertEqual(fail[1][:4], ["REDACT", "UNKNOWN_MSGID", "#general", str(mine.seq)])

    def test_reactions_both_ways(self):
        said = self.desk_says("release!")
        self.alice.send(f"@+draft/react=🎉;+draft/reply={said.seq} TAGMSG #general")
        (changed,) = of(self.desk.received(), codec.Changed)
        self.assertEqual((changed.kind, changed.by), ("react", "alice"))
        self.assertEqual(changed.message.reactions, [codec.Reaction("🎉", ["alice"])])
        react = f"@+draft/react=🎉;+draft/reply={said.seq} :alice!alice@chat TAGMSG :#general"
        self.assertEqual(self.carol.lines(), [react])
        self.assertEqual(self.alice.lines(), [react], "echo-message")
        self.desk.send(codec.React("general", said.seq, "👍", ref="r"))
        self.desk.received(), self.alice.lines()
        self.assertEqual(
            self.carol.lines(), [f"@+draft/react=👍;+draft/reply={said.seq} :desk!desk@chat TAGMSG :#general"]
        )
        self.alice.send(f"@+draft/unreact=🎉;+draft/reply={said.seq} TAGMSG #general")
        (changed,) = of(self.desk.received(), codec.Changed)
        self.assertEqual(changed.message.reactions, [codec.Reaction("👍", ["desk"])])
        self.assertEqual(
            self.carol.lines(),
            [f"@+draft/unreact=🎉;+draft/reply={said.seq} :alice!alice@chat TAGMSG :#general"],
        )
        self.alice.lines()
        self.alice.send(f"@+draft/react=not-an-emoji;+draft/reply={said.seq} TAGMSG #general")
        self.assertIn("bad_emoji", self.alice.lines()[0])

    def test_typing_both_ways(self):
        self.alice.send("@+typing=active TAGMSG #general")
        (typing,) = of(self.desk.received(), codec.TypingNotice)
        self.assertEqual((typing.nick, typing.typing), ("alice", True))
        self.assertEqual(self.carol.lines(), ["@+typing=active :alice!alice@chat TAGMSG :#general"])
        self.assertEqual(self.alice.lines(), [], "never one's own")
        self.alice.send("@+typing=done TAGMSG #general")
        (typing,) = of(self.desk.received(), codec.TypingNotice)
        self.assertFalse(typing.typing)
        self.desk.send(codec.Typing("general"))
        self.server.flush()
        self.assertEqual(self.alice.lines(), ["@+typing=active :desk!desk@chat TAGMSG :#general"])

    def test_away_both_ways(self):
        self.alice.send("AWAY :lunch")
        self.assertEqual(self.alice.numerics(), ["306"])
        (status,) = of(self.desk.received(), codec.Status)
        self.assertEqual((status.nick, status.away), ("alice", "lunch"))
        self.assertEqual(self.carol.lines(), [":alice!alice@chat AWAY :lunch"])
        self.carol.send("WHO #general")
        flags = {params[5]: params[6] for command, params in self.carol.commands() if command == "352"}
        self.assertEqual(flags, {"alice": "G", "carol": "H", "desk": "H"})
        self.carol.send("PRIVMSG alice :there?", "WHOIS alice")
        self.assertEqual(self.carol.commands()[0], ("301", ["carol", "alice", "lunch"]))
        self.alice.send("AWAY")
        self.assertEqual(self.alice.numerics(), ["305"])
        self.assertEqual(self.carol.lines(), [":alice!alice@chat AWAY"])
        self.desk.send(codec.Away(True, "", ref="a"))
        self.server.flush()
        self.assertEqual(self.alice.lines(), [":desk!desk@chat AWAY :Away"])
        self.alice.send("AWAY :" + "x" * 301)
        self.assertIn("bad_text", self.alice.lines()[0])


class DirectConversations(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.alice = irc_account(self.server, "alice")
        self.bob = tcp_account(self.server, "bob")

    def test_privmsg_to_an_account_opens_the_conversation_and_is_a_query_both_ways(self):
        self.alice.send("PRIVMSG bob :hi bob", "PRIVMSG bob :still there?")
        packets = self.bob.received()
        (room,) = of(packets, codec.RoomState)
        self.assertEqual((room.room, room.kind), ("@alice+bob", "direct"))
        self.assertEqual([m.text for m in of(packets, codec.MessagePacket)], ["hi bob", "still there?"])
        self.assertEqual(
            self.alice.lines(),
            [
                "@msgid=1 :alice!alice@chat PRIVMSG bob :hi bob",
                "@msgid=2 :alice!alice@chat PRIVMSG bob :still there?",
            ],
            "no JOIN: a query; the echo with echo-message",
        )
        self.alice.send("PRIVMSG bob :now it is open")
        self.assertEqual([m.room for m in of(self.bob.received(), codec.MessagePacket)], ["@alice+bob"])
        self.alice.lines()
        self.bob.send(codec.Say("hello alice", "b", "@alice+bob"))
        self.server.flush()
        lines = self.alice.lines()
        self.assertEqual(len(lines), 1)
        self.assertEqual(parse(lines[0])[1:], ("bob!bob@chat", "PRIVMSG", ["alice", "hello alice"]))
        self.bob.send(codec.Typing("@alice+bob"))
        self.server.flush()
        self.assertEqual(self.alice.lines(), ["@+typing=active :bob!bob@chat TAGMSG :alice"])
        self.alice.send("CHATHISTORY LATEST bob * 10")
        history = self.alice.commands()
        privmsgs = [params for command, params in history if command == "PRIVMSG"]
        self.assertEqual(
            privmsgs,
            [["bob", "hi bob"], ["bob", "still there?"], ["bob", "now it is open"], ["alice", "hello alice"]],
        )

    def test_react_redact_and_history_in_a_query_name_the_nick(self):
        self.alice.send("CHATHISTORY LATEST bob * 10", "REDACT bob 1")
        self.assertEqual(
            [params[:3] for _, params in self.alice.commands()],
            [["CHATHISTORY", "INVALID_TARGET", "LATEST"], ["REDACT", "INVALID_TARGET", "bob"]],
            "no conversation yet",
        )
        self.alice.send("PRIVMSG bob :first")
        (said,) = of(self.bob.received(), codec.MessagePacket)
        self.alice.lines()
        self.alice.send(f"@+draft/react=👍;+draft/reply={said.seq} TAGMSG bob")
        (changed,) = of(self.bob.received(), codec.Changed)
        self.assertEqual((changed.room, changed.kind, changed.by), ("@alice+bob", "react", "alice"))
        self.assertEqual(
            self.alice.lines(), [f"@+draft/react=👍;+draft/reply={said.seq} :alice!alice@chat TAGMSG :bob"]
        )
        self.bob.send(codec.Edit("@alice+bob", said.seq, "nope", ref="e"))
        self.assertEqual([e.code for e in of(self.bob.received(), codec.Error)], ["not_yours"])
        self.alice.send(f"REDACT bob {said.seq}")
        (changed,) = of(self.bob.received(), codec.Changed)
        self.assertEqual((changed.kind, changed.message.deleted), ("delete", True))
        self.assertEqual(self.alice.lines(), [f":alice!alice@chat REDACT bob :{said.seq}"])
        self.bob.send(codec.Say("reply to that", "b", "@alice+bob"))
        self.bob.received()
        self.bob.send(codec.Edit("@alice+bob", said.seq + 1, "edited reply", ref="e"))
        self.server.flush()
        edit = f"@+draft/reply={said.seq + 1} :bob!bob@chat PRIVMSG alice :(edited) edited reply"
        self.assertEqual(self.alice.lines()[-1], edit)

    def test_a_guest_whispers_and_an_account_whispers_to_a_guest(self):
        guest = IrcPeer(self.server)
        guest.register("gus", UNTIMED)
        guest.send("PRIVMSG bob :psst")
        guest.lines()
        (private,) = of(self.bob.received(), codec.Private)
        self.assertEqual((private.sender, private.text), ("gus", "psst"))
        self.alice.send("PRIVMSG gus :hello guest")
        self.assertEqual(guest.lines(), [":alice!alice@chat PRIVMSG gus :hello guest"])
        self.alice.lines()
        self.alice.send("PRIVMSG nobody :hello?")
        self.assertEqual(self.alice.numerics(), ["401"], "no account, no session: no such nick")

    def test_a_group_conversation_is_an_amp_channel(self):
        carol = tcp_account(self.server, "carol")
        self.bob.send(codec.Open(["alice", "carol"], ref="o"))
        self.server.flush()
        lines = self.alice.commands()
        self.assertEqual(lines[0], ("JOIN", ["&alice+bob+carol"]))
        self.assertIn("366", [command for command, _ in lines])
        self.alice.send("PRIVMSG &alice+bob+carol :hi both")
        (said,) = of(carol.received(), codec.MessagePacket)
        self.assertEqual((said.room, said.text), ("@alice+bob+carol", "hi both"))
        self.alice.lines()
        self.alice.send("PART &alice+bob+carol")
        self.assertEqual(self.alice.commands(), [("PART", ["&alice+bob+carol"])])
        self.alice.send("JOIN &bob+carol")
        self.assertEqual(self.alice.commands()[0], ("JOIN", ["&alice+bob+carol"]))
        self.alice.send("MODE &alice+bob+carol")
        self.assertEqual(self.alice.commands()[0], ("324", ["alice", "&alice+bob+carol", "+n"]))
        self.alice.send("JOIN &bob")
        (notice,) = self.alice.commands()
        self.assertEqual(notice[1][-1], "&bob is your conversation with bob: /msg bob")
        self.bob.received()
        self.bob.send(codec.Join("general"))
        self.alice.send("JOIN #general")
        self.alice.lines()
        self.alice.send("WHOIS bob", "JOIN 0")
        whois = self.alice.commands()
        self.assertIn(("319", ["alice", "bob", "#general"]), whois, "channels only, no conversation")
        self.assertEqual([c for c, _ in whois if c == "PART"], ["PART"], "JOIN 0 leaves channels only")
        self.assertEqual(
            sorted(room.name for room in self.server.hub.session_for("alice").rooms.values()),
            ["@alice+bob", "@alice+bob+carol"],
        )

    def test_what_waits_for_open_is_bounded_and_a_bad_nick_is_401(self):
        opens: list[codec.Open] = []
        handle = IrcConnection._packet

        def slow_open(connection: IrcConnection, packet: Any) -> None:
            (opens.append if isinstance(packet, codec.Open) else lambda p: handle(connection, p))(packet)

        self.patch(IrcConnection, "_packet", slow_open)
        self.alice.send(*[f"PRIVMSG bob :{n}" for n in range(20)])
        self.assertEqual(opens, [codec.Open(["bob"], ref="OPEN bob")], "one OPEN")
        self.assertEqual(self.alice.numerics(), ["404"] * 4, "at most 16 wait for it")
        handle(self.alice.protocol, opens[0])
        said = of(self.bob.received(), codec.MessagePacket)
        self.assertEqual([m.text for m in said], [str(n) for n in range(16)])
        self.alice.send("PRIVMSG xn--: :bad nick")
        self.assertEqual(self.alice.numerics(), ["401"])
