"""The IRC gateway (docs/protocol.md, section 17) on StringTransport and
task.Clock: registration, every command and numeric it answers, the IRCv3
capabilities, encoding, splitting, nick escaping and bad input."""

from __future__ import annotations

import base64
import itertools
import signal

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.core.budget import REFUSAL
from chatproto.core.moderation import check_key
from chatproto.transports.irc import ERROR_ANSWERS, WIRES_KEPT, IrcConnection, IrcWire, parse, split_text
from chatproto.transports.irc import line as irc_line
from chatproto.transports.irc_people import people_of
from chatproto.transports.ircnames import irc_nick, our_nick
from tests.harness import Server
from tests.test_integration import LiveTestCase

PASSWORD = "correct horse"


class IrcPeer:
    """An IRC client in memory: lines in, lines out."""

    def __init__(self, server: Server, host: str = "127.0.0.1") -> None:
        self.server = server
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, 6667))
        self.protocol = IrcConnection(server.hub)
        self.protocol.makeConnection(self.transport)

    @property
    def connection(self):
        return self.protocol.connection

    def send(self, *lines: str) -> None:
        self.protocol.dataReceived("".join(text + "\r\n" for text in lines).encode("utf-8"))

    def lines(self) -> list[str]:
        """Lines written since the last call, after the server's turn."""
        self.server.flush()
        data = self.transport.value().decode("utf-8")
        self.transport.clear()
        assert data == "" or data.endswith("\r\n"), data
        return data.split("\r\n")[:-1]

    def commands(self) -> list[tuple[str, list[str]]]:
        return [parse(text)[2:] for text in self.lines()]

    def numerics(self) -> list[str]:
        return [command for command, _ in self.commands() if command.isdigit()]

    def register(self, nick: str, caps: str = "", password: str | None = None) -> list[str]:
        if caps:
            self.send("CAP LS 302", f"CAP REQ :{caps}")
        if password:
            self.send(f"PASS :{password}")
        self.send(f"NICK {nick}", f"USER {nick} 0 * :{nick} the tester")
        if caps:
            self.send("CAP END")
        return self.lines()

    def drop(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def registered(server: Server, *nicks: str, caps: str = "") -> list[IrcPeer]:
    peers = []
    for nick in nicks:
        peer = IrcPeer(server)
        peer.register(nick, caps)
        peers.append(peer)
    return peers


def in_room(server: Server, room: str, *peers: IrcPeer) -> None:
    for peer in peers:
        peer.send(f"JOIN #{room}")
    for peer in peers:
        peer.lines()


class Names(SynchronousTestCase):
    def test_plain_nicks_go_as_they_are_and_others_are_escaped_reversibly(self):
        for nick in ("alice", "Bob_2", "a-b", "Ärger", "日本語", "a.b", "1st", "xn--fake"):
            escaped = irc_nick(nick)
            self.assertEqual(our_nick(escaped), nick)
            self.assertRegex(escaped, r"^[A-Za-z_][A-Za-z0-9_|-]*$")
        self.assertEqual(irc_nick("alice"), "alice")
        self.assertTrue(irc_nick("Ärger").startswith("xn--"))

    def test_split_text_cuts_between_characters(self):
        text = "é" * 300 + "\n\nsecond line"
        pieces = split_text(text, 100)
        self.assertTrue(all(len(p.encode()) <= 100 for p in pieces))
        self.assertEqual("".join(pieces[:-1]), "é" * 300)
        self.assertEqual(pieces[-1], "second line")

    def test_parse(self):
        self.assertEqual(
            parse("@time=x :n!u@h PRIVMSG #a :hello there"),
            ({"time": "x"}, "n!u@h", "PRIVMSG", ["#a", "hello there"]),
        )
        self.assertEqual(parse("privmsg #a :"), ({}, None, "PRIVMSG", ["#a", ""]))
        self.assertEqual(parse("NICK  bob"), ({}, None, "NICK", ["bob"]))


class Registration(SynchronousTestCase):
    def test_nick_and_user_give_the_welcome_numerics_and_isupport(self):
        server = Server()
        peer = IrcPeer(server)
        lines = peer.register("alice")
        numerics = [parse(text)[2] for text in lines]
        self.assertEqual(numerics[:5], ["001", "002", "003", "004", "005"])
        self.assertIn("375", numerics, "the motd")  # the harness's motd is "hello"
        self.assertIn("376", numerics)
        isupport = next(parse(text)[3] for text in lines if parse(text)[2] == "005")
        for token in ("CHANTYPES=#&", "CASEMAPPING=ascii", "CHANNELLEN=33"):
            self.assertIn(token, isupport)
        self.assertTrue(any(t.startswith("NICKLEN=") for t in isupport))
        self.assertEqual([s.nick for s in server.hub.sessions], ["alice"])

    def test_cap_negotiation_holds_registration_until_cap_end(self):
        server = Server()
        peer = IrcPeer(server)
        peer.send("CAP LS 302", "NICK alice", "USER a 0 * :A")
        (ls,) = peer.commands()
        self.assertEqual(ls[0], "CAP")
        self.assertEqual(
            set(ls[1][-1].split()),
            {
                "account-notify",
                "account-tag",
                "away-notify",
                "batch",
                "cap-notify",
                "draft/chathistory",
                "draft/message-redaction",
                "echo-message",
                "extended-join",
                "labeled-response",
                "message-tags",
                "multi-prefix",
                "sasl",
                "server-time",
                "setname",
                "userhost-in-names",
            },
        )
        peer.send("CAP REQ :server-time echo-message")
        self.assertEqual(peer.commands(), [("CAP", ["*", "ACK", "server-time echo-message"])])
        peer.send("CAP REQ :no-such-cap")
        self.assertEqual(peer.commands(), [("CAP", ["*", "NAK", "no-such-cap"])])
        peer.send("CAP END")
        self.assertEqual(peer.numerics()[0], "001")

    def test_nick_in_use_then_another_nick(self):
        server = Server()
        registered(server, "alice")
        peer = IrcPeer(server)
        peer.send("NICK alice", "USER a 0 * :A")
        self.assertEqual(peer.numerics(), ["433"])
        peer.send("NICK alice2")
        self.assertEqual(peer.numerics()[0], "001")

    def test_an_erroneous_nick_and_commands_before_registration(self):
        server = Server()
        peer = IrcPeer(server)
        peer.send("JOIN #general")
        self.assertEqual(peer.numerics(), ["451"])
        peer.send("NICK bad!nick", "USER a 0 * :A")
        self.assertEqual(peer.numerics(), ["432"])
        peer.send("FROB")
        self.assertEqual(peer.numerics(), ["421"])

    def test_sasl_plain_for_an_account(self):
        server = Server()
        (tcp,) = server.logged_in("ann", version=2)
        tcp.send(codec.AccountRequest("register", PASSWORD))
        tcp.received()
        tcp.send(codec.Quit())
        peer = IrcPeer(server)
        peer.send("CAP LS 302", "NICK whoever", "USER a 0 * :A", "CAP REQ :sasl")
        peer.lines()
        peer.send("AUTHENTICATE PLAIN")
        self.assertEqual(peer.lines(), ["AUTHENTICATE :+"])
        wrong = base64.b64encode(b"\0ann\0not the password").decode()
        peer.send(f"AUTHENTICATE {wrong}")
        self.assertEqual(peer.numerics(), ["904"])
        peer.send("AUTHENTICATE PLAIN")
        peer.lines()
        right = base64.b64encode(f"\0ann\0{PASSWORD}".encode()).decode()
        peer.send(f"AUTHENTICATE {right}")
        self.assertEqual(peer.numerics(), ["900", "903"])
        peer.send("CAP END")
        lines = peer.lines()
        self.assertEqual(parse(lines[0])[2:], ("001", ["ann", "Welcome to test, ann"]))
        self.assertTrue(server.hub.session_for("ann").account)

    def test_a_registered_nick_needs_its_password(self):
        server = Server()
        (tcp,) = server.logged_in("ann", version=2)
        tcp.send(codec.AccountRequest("register", PASSWORD))
        tcp.send(codec.Quit())
        peer = IrcPeer(server)
        peer.send("NICK ann", "USER a 0 * :A")
        self.assertEqual(peer.numerics(), ["433"])
        other = IrcPeer(server)
        other.register("ann", password=PASSWORD)
        self.assertIsNotNone(server.hub.session_for("ann"))


class Channels(SynchronousTestCase):
    def test_join_gives_topic_names_and_is_seen_by_others(self):
        server = Server()
        alice, bob = registered(server, "alice", "bob")
        alice.send("JOIN #general")
        commands = alice.commands()
        self.assertEqual(commands[0], ("JOIN", ["#general"]))
        self.assertEqual([c for c, _ in commands[1:]], ["353", "366"], "no 331 for no topic on joining")
        self.assertEqual(commands[1][1][-2:], ["#general", "alice"], "353: the default room has no operator")
        alice.send("JOIN #den")
        self.assertEqual(alice.commands()[1][1][-1], "@alice", "the maker of a room is its operator")
        bob.send("JOIN #general")
        bob.lines()
        self.assertEqual(alice.lines(), [":bob!bob@chat JOIN :#general"])

    def test_privmsg_reaches_irc_and_tcp_members_and_echo_is_asked_for(self):
        server = Server()
        alice, bob = registered(server, "alice", "bob", caps="echo-message server-time")
        (carol,) = registered(server, "carol")
        (tcp,) = server.logged_in("dave", version=2)
        in_room(server, "general", alice, bob, carol)
        tcp.join("general")
        for peer in (alice, bob, carol):
            peer.lines()
        alice.send("PRIVMSG #general :héllo wörld")
        echo = alice.lines()
        self.assertEqual(len(echo), 1)
        tags, prefix, command, params = parse(echo[0])
        self.assertEqual(
            (prefix, command, params), ("alice!alice@chat", "PRIVMSG", ["#general", "héllo wörld"])
        )
        self.assertRegex(tags["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(
            parse(bob.lines()[0])[1:], ("alice!alice@chat", "PRIVMSG", ["#general", "héllo wörld"])
        )
        self.assertEqual(
            carol.lines(), [":alice!alice@chat PRIVMSG #general :héllo wörld"], "no tags unasked"
        )
        (message,) = [p for p in tcp.received() if isinstance(p, codec.MessagePacket)]
        self.assertEqual((message.sender, message.text, message.room), ("alice", "héllo wörld", "general"))
        carol.send("PRIVMSG #general :no echo for me")
        self.assertEqual(carol.lines(), [], "without echo-message the sender sees nothing back")
        tcp.send(codec.Say("from tcp", None, "general"))
        self.assertEqual(carol.lines(), [":dave!dave@chat PRIVMSG #general :from tcp"])

    def test_actions_go_both_ways(self):
        server = Server()
        (alice,) = registered(server, "alice")
        (tcp,) = server.logged_in("bob", version=2)
        in_room(server, "general", alice)
        tcp.join("general")
        alice.send("PRIVMSG #general :\x01ACTION waves\x01")
        server.flush()
        (message,) = [p for p in tcp.received() if isinstance(p, codec.MessagePacket)]
        self.assertEqual(message.text, "* waves")
        tcp.send(codec.Say("* waves back", room="general"))
        self.assertEqual(alice.lines()[-1], ":bob!bob@chat PRIVMSG #general :\x01ACTION waves back\x01")

    def test_a_long_or_multiline_message_is_split_on_character_boundaries(self):
        server = Server()
        (alice,) = registered(server, "alice")
        (tcp,) = server.logged_in("bob", version=2)
        in_room(server, "general", alice)
        tcp.join("general")
        alice.lines()
        text = "ü" * 1500 + "\nline two"
        tcp.send(codec.Say(text, None, "general"))
        lines = alice.lines()
        self.assertGreater(len(lines), 3)
        self.assertTrue(all(len(x.encode()) + 2 <= 512 for x in lines))
        pieces = [parse(x)[3][1] for x in lines]
        self.assertEqual("".join(pieces[:-1]), "ü" * 1500)
        self.assertEqual(pieces[-1], "line two")

    def test_whispers_both_ways_and_no_such_nick(self):
        server = Server()
        (alice,) = registered(server, "alice")
        (tcp,) = server.logged_in("Ärger", version=2)
        alice.send(f"PRIVMSG {irc_nick('Ärger')} :psst")
        (private,) = [p for p in tcp.received() if isinstance(p, codec.Private)]
        self.assertEqual((private.sender, private.text), ("alice", "psst"))
        tcp.send(codec.Whisper("alice", "back"))
        self.assertEqual(
            alice.lines(), [f":{irc_nick('Ärger')}!{irc_nick('Ärger')}@chat PRIVMSG alice :back"]
        )
        alice.send("PRIVMSG nobody :hello?")
        ((number, params),) = alice.commands()
        self.assertEqual((number, params[:2]), ("401", ["alice", "nobody"]))

    def test_part_quit_and_topic(self):
        server = Server()
        alice, bob = registered(server, "alice", "bob")
        in_room(server, "general", alice, bob)
        alice.send("TOPIC #general :Friday plans")
        self.assertEqual(bob.lines(), [":alice!alice@chat TOPIC #general :Friday plans"])
        alice.lines()
        alice.send("TOPIC #general")
        self.assertEqual([c for c, _ in alice.commands()], ["332", "333"])
        alice.send("PART #general :lunch")
        self.assertEqual(bob.lines(), [":alice!alice@chat PART #general :lunch"])
        self.assertEqual(alice.lines(), [":alice!alice@chat PART #general :lunch"])
        alice.send("PART #general")
        self.assertEqual(alice.numerics(), ["442"])
        alice.send("JOIN #general")
        bob.lines()
        alice.send("QUIT :bye")
        self.assertEqual(bob.lines(), [":alice!alice@chat QUIT :quit: bye"])
        self.assertEqual(alice.lines()[-1], "ERROR :Closing link: alice (Quit)")
        self.assertTrue(alice.transport.disconnecting)

    def test_who_marks_an_operator_as_names_does(self):
        server = Server()
        alice, bob = registered(server, "alice", "bob")
        in_room(server, "den", alice, bob)  # alice made den: its operator
        alice.send("WHO #den")
        flags = {params[5]: params[6] for command, params in alice.commands() if command == "352"}
        self.assertEqual(flags, {"alice": "H@", "bob": "H"})

    def test_names_who_whois_list_mode_away_ping(self):
        server = Server()
        alice, bob = registered(server, "alice", "bob")
        in_room(server, "general", alice, bob)
        alice.send("NAMES #general")
        names = alice.commands()
        self.assertEqual(sorted(names[0][1][-1].lstrip("@").replace("@", "").split()), ["alice", "bob"])
        alice.send("WHO #general")
        who = alice.commands()
        self.assertEqual(
            sorted(params[2] for command, params in who if command == "352"),
            ["alice", "bob"],
            "your own nick too",
        )
        self.assertEqual(who[-1][0], "315")
        alice.send("WHOIS bob")
        self.assertEqual([c for c, _ in alice.commands()], ["311", "319", "312", "318"])
        alice.send("WHOIS nobody")
        self.assertEqual(alice.numerics(), ["401", "318"])
        alice.send("LIST")
        listing = alice.commands()
        self.assertEqual([c for c, _ in listing], ["321", "322", "323"])
        self.assertEqual(listing[1][1][1:3], ["#general", "2"])
        alice.send("MODE #general")
        self.assertEqual(
            alice.commands(), [("324", ["alice", "#general", "+n"]), ("329", ["alice", "#general", "0"])]
        )
        alice.send("MODE #general b")
        self.assertEqual(alice.numerics(), ["368"])
        alice.send("MODE alice +i")
        self.assertEqual(alice.lines(), [":alice!alice@chat MODE alice :+i"], "irssi waits for this answer")
        alice.send("MODE alice +w")
        self.assertEqual(alice.numerics(), ["501"])
        alice.send("AWAY :lunch", "AWAY")
        self.assertEqual(alice.numerics(), ["306", "305"])
        alice.send("PING :abc")
        self.assertEqual(alice.commands(), [("PONG", ["test", "abc"])])

    def test_kick_needs_an_operator(self):
        server = Server()
        alice, bob = registered(server, "alice", "bob")
        in_room(server, "den", alice, bob)
        bob.send("KICK #den alice :go")
        self.assertEqual(bob.numerics(), ["482"])
        alice.lines()
        alice.send("KICK #den bob :enough")
        self.assertIn(":alice!alice@chat KICK #den bob :enough", bob.lines())


class Modes(SynchronousTestCase):
    def test_operators_and_bans_are_modes_both_ways(self):
        server = Server()
        alice, bob = registered(server, "alice", "bob")
        (tcp,) = server.logged_in("carol", version=2)
        in_room(server, "den", alice, bob)
        tcp.join("den")
        for peer in (alice, bob):
            peer.lines()
        bob.send("MODE #den +o bob")
        self.assertEqual(bob.numerics(), ["482"])
        alice.send("MODE #den +o bob")
        self.assertEqual(bob.lines(), [":alice!alice@chat MODE #den +o :bob"])
        self.assertEqual(alice.lines(), [":alice!alice@chat MODE #den +o :bob"], "the actor sees it too")
        (record,) = [p for p in tcp.received() if isinstance(p, codec.MessagePacket)]
        self.assertEqual(record.action, {"op": "op", "target": "bob"})
        bob.send("MODE #den +b carol!*@*")
        self.assertEqual(
            alice.lines(), [":bob!bob@chat MODE #den +b :carol!*@*", ":bob!bob@chat KICK #den carol :bob"]
        )
        alice.send("MODE #den b")
        bans = alice.commands()
        self.assertEqual((bans[0][0], bans[0][1][2:4]), ("367", ["carol!*@*", "bob"]))
        self.assertEqual(bans[-1][0], "368")
        alice.send("MODE #den -b carol", "MODE #den +it")
        self.assertEqual(
            alice.lines(),
            [
                ":alice!alice@chat MODE #den -b :carol!*@*",
                ":alice!alice@chat MODE #den :+ti",
            ],
        )
        alice.send("MODE #den")
        self.assertEqual(alice.commands()[0], ("324", ["alice", "#den", "+nti"]))
        alice.send("MODE #den +z")
        self.assertEqual(alice.numerics(), ["472"])

    def test_an_invitation_is_an_invite_line(self):
        server = Server()
        (ann,) = server.logged_in("ann", version=2)
        ann.join("den")
        ann.send(codec.Moderate("den", "mode", invite_only=True))
        (bob,) = registered(server, "bob")
        bob.send("JOIN #den")
        self.assertEqual(bob.numerics(), ["473"])
        ann.send(codec.Moderate("den", "invite", "bob"))
        self.assertEqual(bob.lines(), [":ann!ann@chat INVITE bob :#den"])
        bob.send("JOIN #den")
        self.assertEqual(bob.commands()[0], ("JOIN", ["#den"]))

    def test_an_operator_back_after_a_reconnect_is_plus_o_to_everyone(self):
        server = Server()
        (tcp,) = server.logged_in("alice", version=2)
        tcp.send(codec.AccountRequest("register", PASSWORD))
        tcp.send(codec.Quit())
        alice = IrcPeer(server)
        alice.register("alice", password=PASSWORD)
        (bob,) = registered(server, "bob")
        in_room(server, "den", alice, bob)
        alice.send("QUIT :brb")
        self.assertEqual(bob.lines(), [":alice!alice@chat QUIT :quit: brb"])
        again = IrcPeer(server)
        lines = again.register("alice", password=PASSWORD)
        self.assertIn(":test 353 alice = #den :bob @alice", lines, "she is back in den, as its operator")
        self.assertEqual(bob.lines(), [":alice!alice@chat JOIN :#den", ":test MODE #den +o :alice"])
        bob.send("NAMES #den")
        self.assertEqual(bob.lines()[0], ":test 353 bob = #den :bob @alice")


class RoomModes(SynchronousTestCase):
    """+k, +l, +m with +v, +s and +n over IRC (docs/protocol.md 17.4)."""

    def setUp(self):
        self.server = Server()
        self.alice, self.bob = registered(self.server, "alice", "bob")
        in_room(self.server, "den", self.alice, self.bob)

    def test_isupport_and_004_advertise_the_modes(self):
        (peer,) = registered(self.server, "carol")
        peer.send("QUIT")
        lines = IrcPeer(self.server).register("dave")
        (myinfo,) = [parse(text)[3] for text in lines if parse(text)[2] == "004"]
        self.assertEqual(myinfo[3:], ["io", "biklmnostv", "bklov"])  # OPER gives +o
        isupport = [t for text in lines if parse(text)[2] == "005" for t in parse(text)[3]]
        self.assertIn("PREFIX=(ov)@+", isupport)
        self.assertIn("CHANMODES=b,k,l,imnst", isupport)

    def test_a_combined_mode_string_is_one_change_and_one_line(self):
        self.alice.send("MODE #den +mlk 5 s3cret")
        expected = [":alice!alice@chat MODE #den +mkl s3cret :5"]
        self.assertEqual(self.alice.lines(), expected)
        self.assertEqual(self.bob.lines(), expected)
        self.alice.send("MODE #den")
        self.assertEqual(
            self.alice.lines(), [":test 324 alice #den +nmkl s3cret :5", ":test 329 alice #den :0"]
        )
        self.alice.send("MODE #den -k *", "MODE #den -l", "MODE #den -m+s")
        self.assertEqual(
            self.bob.lines(),
            [
                ":alice!alice@chat MODE #den -k :*",
                ":alice!alice@chat MODE #den :-l",
                ":alice!alice@chat MODE #den :-m+s",
            ],
        )
        self.alice.lines()
        self.alice.send("MODE #den")
        self.assertEqual(self.alice.lines()[0], ":test 324 alice #den :+ns")

    def test_the_key_is_shown_to_members_only(self):
        self.alice.send("MODE #den +kl key 9")
        self.alice.lines()
        (carol,) = registered(self.server, "carol")
        carol.send("MODE #den")
        self.assertEqual(carol.lines(), [":test 324 carol #den +nkl * :9", ":test 329 carol #den :0"])

    def test_join_with_a_key_and_471_475(self):
        self.alice.send("MODE #den +k sesame", "MODE #den +l 3")
        (carol, dave) = registered(self.server, "carol", "dave")
        carol.send("JOIN #den")
        self.assertEqual(carol.lines(), [":test 475 carol #den :'den' needs its key, and you gave no key"])
        carol.send("JOIN #den,#other wrong")
        self.assertEqual(carol.numerics()[0], "475")
        carol.send("JOIN #den sesame")
        self.assertEqual(carol.commands()[0], ("JOIN", ["#den"]))
        dave.send("JOIN #den sesame")
        self.assertEqual(dave.lines(), [":test 471 dave #den :'den' is full (3 members)"])

    def test_voice_in_a_moderated_channel(self):
        self.alice.send("MODE #den +m")
        self.alice.lines()
        self.bob.lines()
        self.bob.send("PRIVMSG #den :hello?")
        self.assertEqual(
            self.bob.lines(),
            [":test 404 bob #den :'den' is moderated: only voiced members and operators may speak"],
        )
        self.alice.send("MODE #den +v bob")
        self.assertEqual(self.bob.lines(), [":alice!alice@chat MODE #den +v :bob"])
        self.bob.send("PRIVMSG #den :now I may")
        self.assertEqual(self.alice.lines()[-1], ":bob!bob@chat PRIVMSG #den :now I may")
        self.alice.send("NAMES #den")
        self.assertEqual(self.alice.lines()[0], ":test 353 alice = #den :@alice +bob")
        self.alice.send("MODE #den -v bob")
        self.assertEqual(self.bob.lines(), [":alice!alice@chat MODE #den -v :bob"])

    def test_multi_prefix_shows_both_marks(self):
        (carol,) = registered(self.server, "carol", caps="multi-prefix")
        self.alice.send("MODE #den +v alice")
        carol.send("JOIN #den")
        self.assertIn(":test 353 carol = #den :@+alice bob carol", carol.lines())
        self.alice.lines()
        self.alice.send("NAMES #den")
        self.assertEqual(self.alice.lines()[0], ":test 353 alice = #den :@alice bob carol")

    def test_a_voiced_account_back_is_plus_v_after_its_join(self):
        (tcp,) = self.server.logged_in("carol", version=2)
        tcp.send(codec.AccountRequest("register", PASSWORD))
        tcp.received()
        tcp.join("den")
        self.alice.send("MODE #den +v carol")
        tcp.send(codec.Part("den"))
        self.bob.lines()
        tcp.send(codec.Join("den"))
        self.assertEqual(self.bob.lines(), [":carol!carol@chat JOIN :#den", ":test MODE #den +v :carol"])

    def test_n_is_always_on(self):
        self.alice.send("MODE #den +n")
        self.assertEqual(self.alice.lines(), [], "already so: nothing changes, nothing is said")
        self.alice.send("MODE #den -n")
        self.assertEqual(
            self.alice.lines(),
            [":test NOTICE alice :#den is always +n: nobody outside a channel can speak in it"],
        )
        self.assertNotIn("472", self.alice.numerics())

    def test_op_or_voice_of_a_nick_not_there(self):
        self.alice.send("MODE #den +o nobody")
        self.assertEqual(self.alice.lines(), [":test 401 alice nobody :No such nick/channel"])
        registered(self.server, "carol")
        self.alice.send("MODE #den +v carol")
        self.assertEqual(self.alice.lines(), [":test 441 alice carol #den :They aren't on that channel"])
        self.alice.send("MODE #den -v carol")
        self.assertEqual(self.alice.lines(), [":test 441 alice carol #den :They aren't on that channel"])
        self.alice.send("MODE #den -b carol")
        self.assertEqual(
            self.alice.lines(), [":test NOTICE alice :'carol' is not banned from 'den' (no_such_member)"]
        )

    def test_bad_parameters(self):
        self.alice.send("MODE #den +l many", "MODE #den +l 0", "MODE #den +k a\x01b")
        self.alice.send("MODE #den +k " + "x" * 24, "MODE #den +l 100001")
        lines = self.alice.lines()
        self.assertEqual([parse(text)[2] for text in lines], ["696"] * 5)
        self.assertEqual(
            lines[0], ":test 696 alice #den l many :a room's limit is 1 to 100000 members (0 for none)"
        )
        self.alice.send("MODE #den +k", "MODE #den +k :", "MODE #den +l")
        self.assertEqual(self.alice.numerics(), ["461", "461", "461"])
        self.bob.send("MODE #den +m")
        self.assertEqual(self.bob.lines(), [":test 482 bob #den :you are not an operator of 'den'"])

    def test_a_secret_channel_is_not_listed_to_others(self):
        self.alice.send("MODE #den +s")
        (carol,) = registered(self.server, "carol")
        carol.send("LIST")
        self.assertEqual([p[1] for c, p in carol.commands() if c == "322"], ["#general"])
        self.bob.send("LIST")
        self.assertEqual([p[1] for c, p in self.bob.commands() if c == "322"], ["#den", "#general"])
        carol.send("WHOIS bob")
        self.assertNotIn("319", carol.numerics(), "nor in WHOIS to a non-member")
        carol.send("NAMES #den")
        self.assertEqual(carol.lines(), [":test 366 carol #den :End of /NAMES list"], "nor its members")
        carol.send("WHO #den")
        self.assertEqual(carol.numerics(), ["315"], "nor WHO")
        self.alice.send("WHOIS bob")
        self.assertIn(":test 319 alice bob :#den", self.alice.lines())

    def test_an_empty_rooms_kept_key_shows_as_a_star_and_holds(self):
        (tcp,) = self.server.logged_in("ann", version=2)
        tcp.send(codec.AccountRequest("register", PASSWORD))
        tcp.received()
        tcp.join("vault")
        tcp.send(codec.Moderate("vault", "mode", key="sesame", limit=4))
        tcp.send(codec.Part("vault"))
        self.server.flush()
        self.alice.send("MODE #vault")
        self.assertEqual(self.alice.lines(), [":test 324 alice #vault +nkl * :4"], "no 329: not made here")
        self.alice.send("JOIN #vault")
        self.assertEqual(self.alice.numerics(), ["475"])
        self.alice.send("JOIN #vault sesame")
        self.assertEqual(self.alice.commands()[0], ("JOIN", ["#vault"]))

    def test_who_shows_voice(self):
        self.alice.send("MODE #den +v bob")
        self.alice.lines()
        self.alice.send("WHO #den")
        flags = {p[5]: p[6] for c, p in self.alice.commands() if c == "352"}
        self.assertEqual(flags, {"alice": "H@", "bob": "H+"})


class RoomsThatKeepRules(SynchronousTestCase):
    """docs/protocol.md 14.2 over IRC: a guest operator's +i and bans go with
    the room's last member; an account operator's stay, and MODE shows them
    while JOIN is refused by them (never 403 and 473 for one room)."""

    def guest_room(self, server: Server) -> IrcPeer:
        (gus,) = registered(server, "gus")
        in_room(server, "den", gus)
        gus.send("MODE #den +it", "MODE #den +b mallory", "TOPIC #den :gus's den")
        gus.lines()
        return gus

    def assert_fresh(self, server: Server) -> None:
        (bob,) = registered(server, "bob")
        bob.send("MODE #den")
        self.assertEqual(bob.commands(), [("403", ["bob", "#den", "No such channel"])])
        bob.send("JOIN #den")
        lines = bob.lines()
        self.assertEqual(lines[:2], [":bob!bob@chat JOIN :#den", ":test 353 bob = #den :@bob"])
        self.assertIn(":test 353 bob = #den :@bob", lines, "the next joiner runs it")
        bob.send("MODE #den")
        self.assertEqual(bob.commands(), [("324", ["bob", "#den", "+n"]), ("329", ["bob", "#den", "0"])])

    def test_a_guest_operators_modes_go_with_the_room(self):
        server = Server()
        self.guest_room(server).send("PART #den")
        self.assert_fresh(server)

    def test_and_after_a_restart(self):
        from chatproto.backends.sqlite import SQLiteLog

        path = self.mktemp()
        server = Server(store=SQLiteLog(path))
        self.guest_room(server)
        server.flush()
        server.store.close()
        self.assert_fresh(Server(store=SQLiteLog(path)))

    def test_an_account_operators_modes_stay_and_mode_shows_them(self):
        from chatproto.backends.sqlite import SQLiteLog

        path = self.mktemp()
        server = Server(store=SQLiteLog(path))
        (tcp,) = server.logged_in("alice", version=2)
        tcp.send(codec.AccountRequest("register", PASSWORD))
        tcp.send(codec.Quit())
        alice = IrcPeer(server)
        alice.register("alice", password=PASSWORD)
        in_room(server, "den", alice)
        alice.send("MODE #den +i", "MODE #den +b mallory", "PART #den")
        alice.lines()
        self.assert_kept(server)  # while empty
        self.assert_kept(Server(store=SQLiteLog(path)))  # after a restart

    def assert_kept(self, server: Server) -> None:
        (bob,) = registered(server, "bob")
        bob.send("JOIN #den")
        self.assertEqual(bob.numerics(), ["473"])
        bob.send("MODE #den")
        self.assertEqual(bob.commands(), [("324", ["bob", "#den", "+ni"])])
        bob.send("MODE #den b")
        bans = bob.commands()
        self.assertEqual(
            [(c, p[2:4]) for c, p in bans],
            [("367", ["mallory!*@*", "alice"]), ("368", ["End of channel ban list"])],
        )
        bob.send("MODE #nowhere", "LIST")
        self.assertEqual(bob.numerics(), ["403", "321", "322", "323"], "not listed: nobody is in it")
        bob.send("QUIT")
        server.flush()
        server.store.close()


class History(SynchronousTestCase):
    def test_chathistory_latest_and_before_in_batches(self):
        server = Server()
        (alice,) = registered(server, "alice", caps="batch draft/chathistory server-time message-tags")
        (tcp,) = server.logged_in("bob", version=2)
        tcp.join("general")
        for n in range(30):
            tcp.send(codec.Say(f"m{n}", None, "general"))
            server.flush()
        in_room(server, "general", alice)
        alice.send("CHATHISTORY LATEST #general * 10")
        lines = alice.lines()
        self.assertEqual(parse(lines[0])[2:4], ("BATCH", parse(lines[0])[3]))
        batch = parse(lines[0])[3][0][1:]
        messages = [parse(x) for x in lines[1:-1]]
        self.assertEqual([m[3][1] for m in messages], [f"m{n}" for n in range(20, 30)])
        self.assertTrue(all(m[0]["batch"] == batch for m in messages))
        self.assertEqual(parse(lines[-1])[3], ["-" + batch])
        oldest = messages[0][0]["msgid"]
        alice.send(f"CHATHISTORY BEFORE #general msgid={oldest} 5")
        older = [parse(x)[3][1] for x in alice.lines()[1:-1]]
        self.assertEqual(older, [f"m{n}" for n in range(15, 20)])
        alice.send("CHATHISTORY SIDEWAYS #general * 5")
        self.assertEqual(alice.commands()[0][0], "FAIL")


class BadInput(SynchronousTestCase):
    def test_a_character_split_across_reads_arrives_whole(self):
        server = Server()
        (alice,) = registered(server, "alice")
        (tcp,) = server.logged_in("bob", version=2)
        in_room(server, "general", alice)
        tcp.join("general")
        data = "PRIVMSG #general :naïve ☃\r\n".encode()
        cut = data.index("☃".encode()) + 1
        alice.protocol.dataReceived(data[:cut])
        alice.protocol.dataReceived(data[cut:])
        server.flush()
        (message,) = [p for p in tcp.received() if isinstance(p, codec.MessagePacket)]
        self.assertEqual(message.text, "naïve ☃")

    def test_many_lines_in_one_read_through_pauses_and_a_part_line(self):
        """A read of many lines is handled from an offset: across the fair
        share's pauses and a line cut at the read's end, every line once,
        in order, and nothing of it is kept once handled."""
        server = Server(packets_per_turn=3, rate=1e9, burst=10**9, packet_rate=1e9, packet_burst=1e9)
        (alice,) = registered(server, "alice")
        (tcp,) = server.logged_in("bob", version=2)
        in_room(server, "general", alice)
        tcp.join("general")
        data = "".join(f"PRIVMSG #general :line {n}\r\n" for n in range(10)).encode()
        data += b"PRIVMSG #general :li"
        alice.protocol.dataReceived(data)
        for _ in range(10):
            server.flush()
        alice.protocol.dataReceived(b"ne 10\r\n")
        server.flush()
        texts = [p.text for p in tcp.received() if isinstance(p, codec.MessagePacket)]
        self.assertEqual(texts, [f"line {n}" for n in range(11)])
        self.assertEqual(alice.protocol._lines, b"")

    def test_invalid_utf8_a_long_line_and_a_flood_of_joins(self):
        server = Server()
        (alice,) = registered(server, "alice")
        alice.protocol.dataReceived(b"PRIVMSG #general :\xff\xfe\r\n")
        (notice,) = alice.commands()
        self.assertEqual(notice[0], "NOTICE")
        alice.send("PRIVMSG #general :" + "x" * 600)
        self.assertEqual(alice.numerics(), ["417"])
        alice.send(*("JOIN " + ",".join(f"#r{n}" for n in range(k, k + 20)) for k in range(0, 200, 20)))
        numerics = alice.numerics()
        self.assertTrue(set(numerics) <= {"331", "353", "366", "405", "263"}, set(numerics))
        self.assertIn("263", numerics, "the join rate")
        alice.send("PING :still here")
        self.assertEqual(alice.commands(), [("PONG", ["test", "still here"])])
        self.assertFalse(alice.transport.disconnecting)

    def test_blank_bad_and_overlong_lines_are_charged_like_commands(self):
        """A line costs its sender whatever it is: blank, not UTF-8 or too long."""
        for line in (b"\r\n", b"   \r\n", b"PRIVMSG #general :\xff\r\n", b"X" * 600 + b"\r\n"):
            server = Server(packet_rate=10, packet_burst=10)
            (alice,) = registered(server, "alice")
            server.clock.advance(1)
            alice.lines()
            alice.protocol.dataReceived(line * 40)
            self.assertEqual(alice.transport.producerState, "paused", f"{line[:20]!r} flooded for free")

    def test_an_error_flood_is_answered_a_few_times_then_quietly(self):
        server = Server(packet_rate=1e6, packet_burst=1e6)
        (alice,) = registered(server, "alice")
        alice.protocol.dataReceived(b"PRIVMSG #general :\xff\r\n" * 50 + b"X" * 600 + b"\r\n" * 50)
        answers = alice.commands()
        self.assertLessEqual(len(answers), ERROR_ANSWERS + 1, answers)
        self.assertIn("further errors", answers[-1][1][-1])
        alice.send("PING :good line")
        self.assertEqual(alice.commands(), [("PONG", ["test", "good line"])])
        alice.protocol.dataReceived(b"PRIVMSG #general :\xff\r\n")
        self.assertEqual(len(alice.commands()), 1, "a good line starts the count again")

    def test_an_irc_connection_is_pending_then_connected_and_times_out(self):
        from chatproto.metrics import transport_kind

        server = Server(login_timeout=5)
        peer = IrcPeer(server)
        self.assertEqual(len(server.hub.pending), 1)
        self.assertEqual(transport_kind(peer.connection), "irc")
        server.clock.advance(5)
        self.assertEqual(peer.lines(), ["ERROR :Closing link: login_timeout"])
        self.assertTrue(peer.transport.disconnecting)
        self.assertEqual(server.hub.pending, [])

    def test_rooms_of_an_irc_client_are_the_same_rooms(self):
        server = Server()
        (alice,) = registered(server, "alice")
        in_room(server, "general", alice)
        self.assertEqual([s.nick for s in server.hub.room_for("general").members.values()], ["alice"])
        alice.drop()
        self.assertEqual(server.hub.sessions, [])


@defer.inlineCallbacks
def events(client, count: int):
    """The next ``count`` messages and leaves a chat client sees, in order."""
    seen = []
    while len(seen) < count:
        packet = yield client.next()
        if isinstance(packet, codec.MessagePacket):
            seen.append((packet.sender, packet.text))
        elif isinstance(packet, codec.Left):
            seen.append(("left", packet.nick))
    return seen


class NickChanges(SynchronousTestCase):
    """NICK after registration (docs/protocol.md 17.4): NICK, and RENAMED as
    ``:old!old@chat NICK new``."""

    def setUp(self):
        self.server = Server()
        self.ann, self.bob = registered(self.server, "ann", "bob")
        in_room(self.server, "a", self.ann, self.bob)
        in_room(self.server, "b", self.ann, self.bob)
        self.bob.lines()

    def test_a_rename_is_one_nick_line_to_each_client_the_renamed_one_too(self):
        self.ann.send("NICK annie")
        self.assertEqual(self.ann.lines(), [":ann!ann@chat NICK :annie"])
        self.assertEqual(self.bob.lines(), [":ann!ann@chat NICK :annie"], "in two shared channels: once")
        self.ann.send("PRIVMSG #a :hi")
        self.assertEqual(self.bob.lines(), [":annie!annie@chat PRIVMSG #a :hi"])
        self.ann.send("NAMES #a")
        self.assertIn(":test 353 annie = #a :@annie bob", self.ann.lines(), "an operator still")

    def test_the_new_nick_is_the_clients_in_numerics(self):
        self.ann.send("NICK annie")
        self.ann.lines()
        self.ann.send("NICK bob")
        self.assertEqual(
            self.ann.lines(), [":test 433 annie bob :Nickname is already in use: nick 'bob' is taken"]
        )

    def test_refusals_are_the_numerics_irc_servers_give(self):
        self.ann.send("NICK")
        self.assertEqual(self.ann.numerics(), ["431"])
        self.ann.send("NICK bad!nick")
        self.assertEqual(self.ann.lines(), [":test 432 ann bad!nick :Erroneous nickname"])
        self.ann.send("NICK xn--!!")
        self.assertEqual(self.ann.numerics(), ["432"])
        self.ann.send("NICK ann")
        self.assertEqual(self.ann.lines(), [], "its own nick: nothing")

    def test_a_registered_nick_is_433(self):
        account = IrcPeer(self.server)
        account.register("carol")
        account.send("QUIT")
        self.server.flush()
        from tests.test_accounts import registered as account_of

        account_of(self.server, "dora").send(codec.Quit())
        self.server.flush()
        self.ann.send("NICK Dora")
        (line,) = self.ann.lines()
        self.assertTrue(line.startswith(":test 433 ann Dora :"), line)

    def test_a_ban_in_one_of_our_channels_is_435_with_the_channel(self):
        self.ann.send("MODE #a +b mallory")
        self.ann.lines(), self.bob.lines()
        self.ann.send("NICK mallory")
        self.assertEqual(
            self.ann.lines(),
            [":test 435 ann mallory #a :Cannot change nickname while banned on channel"],
        )

    def test_an_account_is_told_with_fail(self):
        from tests.test_accounts import PASSWORD as password
        from tests.test_accounts import registered as account_of

        account_of(self.server, "erin").send(codec.Quit())
        self.server.flush()
        erin = IrcPeer(self.server)
        erin.register("erin", password=password)
        erin.send("NICK erina")
        (line,) = erin.lines()
        self.assertTrue(line.startswith(":test FAIL NICK ACCOUNT_NICK erina :"), line)

    def test_in_no_channel_the_client_alone_is_told(self):
        (gus,) = registered(self.server, "gus")
        gus.send("NICK gary")
        self.assertEqual(gus.lines(), [":gus!gus@chat NICK :gary"])
        self.assertEqual(self.bob.lines(), [])
        gus.send("WHOIS gary")
        self.assertIn("311", gus.numerics())

    def test_a_server_ban_is_432(self):
        from tests.test_accounts import device, made_admin

        server = Server(admins=["root"])
        made_admin(server, "root")
        root, _ = device(server, "root")
        root.send(codec.AdminRequest("ban", target="mallory", ref="b"))
        (gus,) = registered(server, "gus")
        gus.send("NICK mallory")
        (line,) = gus.lines()
        self.assertTrue(line.startswith(":test 432 gus mallory :Erroneous nickname: "), line)

    def test_too_fast_is_438(self):
        server = Server(join_burst=1, join_rate=0.001)
        (gus,) = registered(server, "gus")
        gus.send("NICK gus2", "NICK gus3")
        lines = gus.lines()
        self.assertEqual(lines[0], ":gus!gus@chat NICK :gus2")
        self.assertEqual(lines[1], ":test 438 gus2 gus3 :Nick change too fast. Please wait")


class Live(LiveTestCase):
    @defer.inlineCallbacks
    def test_a_blank_line_flood_is_cut_and_a_bystander_answered(self):
        """On real sockets: blank lines as fast as TCP takes them. The flooder
        is paused and then cut as kicked; a bystander's PING still comes back."""
        yield self.serve(irc=True, packet_rate=50, packet_burst=50, flood_cut=1)
        flooder = yield self.irc("flooder")
        bystander = yield self.irc("calm")
        for _ in range(200):  # bounded: 200 writes of 4,000 blank lines
            flooder.transport.write(b"\r\n" * 4000)
        bystander.send("PING :still served")
        yield bystander.expect(lambda text: "PONG" in text and "still served" in text)
        yield flooder.expect(lambda text: text.startswith("ERROR") and "kicked" in text)
        yield flooder.lost

    @defer.inlineCallbacks
    def test_irc_tcp_and_websocket_clients_see_one_order_in_one_room(self):
        yield self.serve(irc=True, web=True)
        ann = yield self.irc("ann")
        bob = yield self.irc("bob")
        tcp = yield self.client("carol", version=2)
        browser = yield self.ws("dan")
        for client in (tcp, browser):
            client.send(codec.Join("general"))
            yield client.expect(codec.RoomState)
        ann.send("JOIN #general")
        yield ann.expect(lambda text: " 366 " in text)
        bob.send("JOIN #general")
        yield bob.expect(lambda text: " 366 " in text)
        said = [(ann, "PRIVMSG #general :from ann ☃"), (bob, "PRIVMSG #general :from bob")]
        for client, text in said:
            client.send(text)
        tcp.send(codec.Say("from carol", None, "general"))
        browser.send(codec.Say("from dan", None, "general"))
        bob.send("PART #general :off")
        # Everyone sees one sequence of the room's messages and leaves.
        order = yield events(tcp, 5)
        self.assertIn(("left", "bob"), order)
        self.assertEqual((yield events(browser, 5)), order)
        seen_by_ann = []
        while len(seen_by_ann) < 4:
            text = yield ann.expect(lambda t: " PRIVMSG #general " in t or " PART #general" in t)
            who = text[1 : text.index("!")]
            seen_by_ann.append(("left", who) if " PART " in text else (who, text.split(" :", 1)[1]))
        self.assertEqual(seen_by_ann, [e for e in order if e[0] != "ann"], "no echo of ann's own")
        ann.send("QUIT :done")
        quit_seen = yield tcp.expect(codec.Left)
        self.assertEqual((quit_seen.nick, quit_seen.reason, quit_seen.message), ("ann", "quit", "done"))


# -- the gateway's conformance defects (docs/protocol.md 17.3-17.5) ----------------------


def account(server: Server, nick: str, password: str = PASSWORD) -> None:
    """``nick`` registered as an account (over TCP), and logged out."""
    (tcp,) = server.logged_in(nick, version=2)
    tcp.send(codec.AccountRequest("register", password))
    tcp.received()
    tcp.send(codec.Quit())


def sasl_chunks(account_name: str, password: str) -> list[str]:
    """SASL PLAIN's payload as AUTHENTICATE lines: 400-byte chunks, and
    ``+`` after an exact multiple (IRCv3 SASL)."""
    payload = base64.b64encode(f"\0{account_name}\0{password}".encode()).decode()
    chunks = [payload[i : i + 400] for i in range(0, len(payload), 400)]
    if len(chunks[-1]) == 400:
        chunks.append("+")
    return [f"AUTHENTICATE {chunk}" for chunk in chunks]


class Notices(SynchronousTestCase):
    def test_a_notice_in_a_channel_is_a_notice_to_irc_and_a_notice_record_to_version_2(self):
        server = Server()
        (alice,) = registered(server, "alice", caps="echo-message")
        (bob,) = registered(server, "bob")
        (new,) = server.logged_in("carol", version=2)
        (old,) = server.logged_in("dave")  # version 1: in the default room
        in_room(server, "general", alice, bob)
        new.received()
        new.join("general")
        for peer in (alice, bob):
            peer.lines()
        old.received()
        alice.send("NOTICE #general :the bot speaks")
        self.assertEqual(bob.lines(), [":alice!alice@chat NOTICE #general :the bot speaks"])
        self.assertEqual(alice.lines(), [":alice!alice@chat NOTICE #general :the bot speaks"], "the echo")
        (message,) = [p for p in new.received() if isinstance(p, codec.MessagePacket)]
        self.assertEqual((message.text, message.action), ("the bot speaks", {"op": "notice"}))
        (plain,) = [p for p in old.received() if isinstance(p, codec.MessagePacket)]
        self.assertEqual((plain.text, plain.action), ("the bot speaks", None), "version 1: a message")
        new.send(codec.Say("said as a notice", None, "general", notice=True))
        self.assertEqual(bob.lines(), [":carol!carol@chat NOTICE #general :said as a notice"])

    def test_a_notice_is_kept_a_notice_and_version_1_reads_it_as_a_message(self):
        server = Server()
        (alice,) = registered(server, "alice", caps="draft/chathistory batch")
        in_room(server, "general", alice)
        alice.send("NOTICE #general :kept")
        server.flush()
        alice.send("CHATHISTORY LATEST #general * 5")
        (kept,) = [text for text in alice.lines() if " NOTICE " in text]
        self.assertTrue(kept.endswith(" :alice!alice@chat NOTICE #general :kept"), kept)
        (old,) = server.logged_in("dave")
        old.send(codec.HistoryRequest(limit=5))
        (page,) = [p for p in old.received() if isinstance(p, codec.HistoryPage)]
        self.assertEqual([(m.text, m.action) for m in page.messages], [("kept", None)])
        welcome = server.peer().login("erin")  # its history as version 1 sees it
        self.assertEqual([(m.text, m.action) for m in welcome.history], [("kept", None)])

    def test_a_whispered_notice_crosses_to_another_node_as_one(self):
        from chatproto.core.records import Whispered, read_note

        private = codec.Private(1.5, "alice", "bob", "psst", None, True)
        self.assertEqual(read_note(Whispered(private).to_json()), Whispered(private))
        plain = codec.Private(1.5, "alice", "bob", "psst")
        self.assertNotIn("notice", Whispered(plain).to_json()["private"])

    def test_a_notice_to_a_nick_is_a_notice_and_never_answered(self):
        server = Server()
        alice, bob = registered(server, "alice", "bob")
        (new,) = server.logged_in("carol", version=2)
        (old,) = server.logged_in("dave")
        alice.send("NOTICE bob :ping from a bot")
        self.assertEqual(bob.lines(), [":alice!alice@chat NOTICE bob :ping from a bot"])
        alice.send("NOTICE carol :to version 2", "NOTICE dave :to version 1", "NOTICE nobody :lost")
        (private,) = [p for p in new.received() if isinstance(p, codec.Private)]
        self.assertEqual((private.text, private.notice), ("to version 2", True))
        (plain,) = [p for p in old.received() if isinstance(p, codec.Private)]
        self.assertEqual((plain.text, plain.notice), ("to version 1", None))
        self.assertEqual(alice.lines(), [], "a NOTICE is never answered, not even with 401")

    def test_a_notice_between_accounts_goes_in_their_conversation_as_a_notice(self):
        server = Server()
        account(server, "ann")
        account(server, "bea")
        ann, bea = IrcPeer(server), IrcPeer(server)
        ann.register("ann", password=PASSWORD)
        bea.register("bea", password=PASSWORD)
        ann.send("NOTICE bea :from one account to another")
        self.assertEqual(bea.lines(), [":ann!ann@chat NOTICE bea :from one account to another"])

    def test_a_privmsg_to_oneself_comes_back_once(self):
        server = Server()
        (alice,) = registered(server, "alice")
        (echoed,) = registered(server, "bob", caps="echo-message")
        alice.send("PRIVMSG alice :note to self")
        self.assertEqual(alice.lines(), [":alice!alice@chat PRIVMSG alice :note to self"])
        echoed.send("PRIVMSG bob :me too")
        self.assertEqual(echoed.lines(), [":bob!bob@chat PRIVMSG bob :me too"])


class Kicks(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.alice, self.bob, self.carol = registered(self.server, "alice", "bob", "carol")
        in_room(self.server, "den", self.alice, self.bob)  # alice made den: its operator
        for peer in (self.alice, self.bob):
            peer.lines()

    def test_a_kick_comes_once_from_the_kicker(self):
        (tcp,) = self.server.logged_in("dave", version=2)
        tcp.join("den")
        for peer in (self.alice, self.bob):
            peer.lines()
        self.alice.send("KICK #den bob :spam")
        kick = ":alice!alice@chat KICK #den bob :spam"
        self.assertEqual(self.bob.lines(), [kick])
        self.assertEqual(self.alice.lines(), [kick], "no NOTICE before it")
        (record,) = [p for p in tcp.received() if isinstance(p, codec.MessagePacket)]
        self.assertEqual(record.action, {"op": "kick", "target": "bob", "reason": "spam"})
        self.bob.send("JOIN #den")
        self.bob.lines()
        self.alice.lines()
        self.alice.send("KICK #den bob")
        self.assertEqual(self.bob.lines(), [":alice!alice@chat KICK #den bob :alice"], "the kicker's nick")

    def test_a_kick_of_a_non_member_is_441_with_the_nick_and_of_nobody_401(self):
        self.alice.send("KICK #den carol :x")
        self.assertEqual(self.alice.lines(), [":test 441 alice carol #den :They aren't on that channel"])
        self.alice.send("KICK #den nobody :x")
        self.assertEqual(self.alice.lines(), [":test 401 alice nobody :No such nick/channel"])
        self.bob.send("KICK #den alice")
        self.assertEqual(self.bob.numerics(), ["482"])

    def test_cut_off_the_server_is_a_quit(self):
        self.server.hub.kick(self.server.hub.session_for("bob").id)
        self.assertEqual(self.alice.lines(), [":bob!bob@chat QUIT :kicked"])


class Invites(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.alice, self.bob, self.carol = registered(self.server, "alice", "bob", "carol")
        in_room(self.server, "den", self.alice, self.carol)
        self.alice.send("MODE #den +i")
        for peer in (self.alice, self.carol):
            peer.lines()

    def test_an_invitation_is_341_to_the_inviter_and_invite_to_the_invited(self):
        self.alice.send("INVITE bob #den")
        self.assertEqual(self.alice.lines(), [":test 341 alice bob :#den"])
        self.assertEqual(self.bob.lines(), [":alice!alice@chat INVITE bob :#den"])
        self.bob.send("JOIN #den")
        self.assertEqual(self.bob.commands()[0], ("JOIN", ["#den"]))

    def test_what_irc_checks_first_then_the_operator(self):
        self.alice.send("INVITE nobody #den", "INVITE bob #nowhere", "INVITE carol #den", "INVITE bob")
        self.assertEqual(
            self.alice.lines(),
            [
                ":test 401 alice nobody :No such nick/channel",
                ":test 403 alice #nowhere :No such channel",
                ":test 443 alice carol #den :is already on channel",
                ":test 461 alice INVITE :Not enough parameters",
            ],
        )
        self.bob.send("INVITE carol #den")
        self.assertEqual(self.bob.lines(), [":test 442 bob #den :You're not on that channel"])
        self.carol.send("INVITE bob #den")
        self.assertEqual(self.carol.numerics(), ["482"])
        self.assertEqual(self.bob.lines(), [])


class Listing(SynchronousTestCase):
    def test_list_of_channels_lists_those_only(self):
        server = Server()
        (alice,) = registered(server, "alice")
        in_room(server, "general", alice)
        in_room(server, "den", alice)
        in_room(server, "attic", alice)
        alice.send("LIST #DEN")
        self.assertEqual(
            alice.lines(),
            [
                ":test 321 alice Channel :Users  Name",
                ":test 322 alice #den 1 :",
                ":test 323 alice :End of /LIST",
            ],
        )
        alice.send("LIST #den,#attic,#nowhere")
        listed = [params[1] for command, params in alice.commands() if command == "322"]
        self.assertEqual(sorted(listed), ["#attic", "#den"])
        alice.send("LIST")
        self.assertEqual(len([c for c in alice.numerics() if c == "322"]), 3)


class Numerics(SynchronousTestCase):
    def test_no_text_no_recipient_no_ping_token(self):
        server = Server()
        (alice,) = registered(server, "alice")
        in_room(server, "general", alice)
        alice.send("PRIVMSG #general :", "PRIVMSG #general", "PRIVMSG", "PING", "PING :")
        self.assertEqual(
            alice.lines(),
            [
                ":test 412 alice :No text to send",
                ":test 412 alice :No text to send",
                ":test 411 alice :No recipient given (PRIVMSG)",
                ":test 409 alice :No origin specified",
                ":test 409 alice :No origin specified",
            ],
        )

    def test_joining_a_channel_without_a_topic_says_nothing_of_it_but_topic_asks(self):
        server = Server()
        (alice,) = registered(server, "alice")
        alice.send("JOIN #den")
        self.assertEqual(alice.numerics(), ["353", "366"])
        alice.send("TOPIC #den")
        self.assertEqual(alice.lines(), [":test 331 alice #den :No topic is set"])

    def test_chathistory_fails_name_the_subcommand(self):
        server = Server()
        (alice,) = registered(server, "alice", caps="draft/chathistory batch")
        alice.send("CHATHISTORY LATEST #elsewhere * 10")
        (fail,) = alice.commands()
        self.assertEqual(
            (fail[0], fail[1][:4]), ("FAIL", ["CHATHISTORY", "INVALID_TARGET", "LATEST", "#elsewhere"])
        )
        alice.send("CHATHISTORY BEFORE nobody * 10", "CHATHISTORY BEFORE #a x 10", "CHATHISTORY SIDEWAYS")
        self.assertEqual(
            alice.lines(),
            [
                ":test FAIL CHATHISTORY INVALID_TARGET BEFORE nobody :No such query",
                ":test FAIL CHATHISTORY INVALID_PARAMS BEFORE :msgid=SEQ or *, and a count",
                ":test FAIL CHATHISTORY INVALID_PARAMS SIDEWAYS :LATEST, BEFORE or AFTER",
            ],
        )


class RegistrationChecks(SynchronousTestCase):
    def test_user_needs_a_realname_and_nick_star_is_432_at_once(self):
        server = Server()
        peer = IrcPeer(server)
        peer.send("USER u * * :", "USER u * *", "NICK *", "NICK a,b")
        self.assertEqual(
            peer.lines(),
            [
                ":test 461 * USER :Not enough parameters",
                ":test 461 * USER :Not enough parameters",
                ":test 432 * * :Erroneous nickname",
                ":test 432 * a,b :Erroneous nickname",
            ],
        )
        peer.send("NICK ok", "USER u * * :Real Name")
        self.assertEqual(peer.numerics()[0], "001")
        peer.send("USER again * * :x")
        self.assertEqual(peer.lines(), [":test 462 ok :You may not reregister"])

    def test_the_username_and_realname_are_kept_for_who_and_whois(self):
        server = Server()
        alice = IrcPeer(server)
        alice.send("NICK alice", "USER al 0 * :Alice Liddell")
        (bob,) = registered(server, "bob")
        server.logged_in("carol", version=2)
        bob.send("WHO alice", "WHOIS alice", "WHO carol")
        lines = bob.lines()
        self.assertEqual(lines[0], ":test 352 bob * al chat test alice H :0 Alice Liddell")
        self.assertIn(":test 311 bob alice al chat * :Alice Liddell", lines)
        self.assertIn(":test 352 bob * carol chat test carol H :0 carol", lines, "not IRC: the nick")

    def test_a_nick_after_sasl_leaves_the_account_s_nick(self):
        server = Server()
        account(server, "ann")
        peer = IrcPeer(server)
        peer.send("CAP LS 302", "CAP REQ :sasl", "AUTHENTICATE PLAIN", *sasl_chunks("ann", PASSWORD))
        self.assertEqual(peer.numerics(), ["900", "903"])
        peer.send("NICK someone", "USER a 0 * :A", "CAP END")
        self.assertEqual(parse(peer.lines()[0])[2:], ("001", ["ann", "Welcome to test, ann"]))
        self.assertTrue(server.hub.session_for("ann").account)

    def test_sasl_in_chunks_and_its_bound(self):
        server = Server()
        long = "p" * 700  # a payload of more than 400 bytes: chunks
        account(server, "ann", long)
        peer = IrcPeer(server)
        peer.send("CAP LS 302", "CAP REQ :sasl", "NICK ann", "USER a 0 * :A")
        peer.lines()
        chunks = sasl_chunks("ann", long)
        self.assertEqual([len(c.split()[1]) for c in chunks], [400, 400, 140])
        peer.send("AUTHENTICATE PLAIN", *chunks[:2])
        self.assertEqual(peer.lines(), ["AUTHENTICATE :+"], "more follows a chunk of 400")
        peer.send(chunks[2])
        self.assertEqual(peer.numerics(), ["900", "903"])
        other = IrcPeer(server)
        other.send("CAP LS 302", "CAP REQ :sasl", "AUTHENTICATE PLAIN")
        other.lines()
        other.send(*["AUTHENTICATE " + "A" * 400] * 21)
        self.assertEqual(other.lines(), [":test 904 * :SASL authentication failed: the message is too long"])
        other.send("AUTHENTICATE PLAIN", "AUTHENTICATE " + "A" * 401)
        self.assertEqual(other.lines(), ["AUTHENTICATE :+", ":test 905 * :SASL message too long"])
        other.send("AUTHENTICATE PLAIN", "AUTHENTICATE " + "A" * 400, "AUTHENTICATE *")
        self.assertEqual(other.lines(), ["AUTHENTICATE :+", ":test 906 * :SASL authentication aborted"])


class Who(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.alice, self.coolnick, self.bob = registered(self.server, "alice", "coolnick", "bob")
        in_room(self.server, "den", self.alice, self.coolnick)

    def test_who_nick_has_no_channel_and_who_channel_echoes_the_mask_asked(self):
        self.coolnick.send("AWAY :out")
        self.alice.send("WHO coolnick", "WHO #DEN")
        self.assertEqual(
            self.alice.lines(),
            [
                ":test 352 alice * coolnick chat test coolnick G :0 coolnick the tester",
                ":test 315 alice coolnick :End of /WHO list",
                ":test 352 alice #den alice chat test alice H@ :0 alice the tester",
                ":test 352 alice #den coolnick chat test coolnick G :0 coolnick the tester",
                ":test 315 alice #DEN :End of /WHO list",
            ],
        )

    def test_masks_match_nicks_sharing_a_channel(self):
        self.alice.send("WHO coolni*")
        self.assertEqual(
            self.alice.lines(),
            [
                ":test 352 alice * coolnick chat test coolnick H :0 coolnick the tester",
                ":test 315 alice coolni* :End of /WHO list",
            ],
        )
        self.alice.send("WHO *")
        self.assertEqual(
            [params[5] for c, params in self.alice.commands() if c == "352"], ["alice", "coolnick"]
        )
        self.bob.send("WHO coolni*", "WHO b?b")
        self.assertEqual(
            self.bob.numerics(), ["315", "352", "315"], "everyone is +i: only those sharing a channel"
        )

    def test_whois_shows_channel_prefixes_and_away(self):
        self.coolnick.send("AWAY :out")
        self.bob.send("WHOIS alice", "WHOIS coolnick")
        lines = self.bob.lines()
        self.assertIn(":test 319 bob alice :@#den", lines)
        self.assertIn(":test 319 bob coolnick :#den", lines)
        self.assertIn(":test 301 bob coolnick :out", lines)


class Operators(SynchronousTestCase):
    def setUp(self):
        from tests.test_accounts import made_admin

        self.server = Server(admins=["root", "boss"])
        made_admin(self.server, "root", PASSWORD)
        made_admin(self.server, "boss", PASSWORD)
        self.root, self.boss = IrcPeer(self.server), IrcPeer(self.server)
        self.root.register("root", password=PASSWORD)
        self.boss.register("boss", password=PASSWORD)
        self.bob, self.carol = registered(self.server, "bob", "carol")
        in_room(self.server, "general", self.bob, self.carol)

    def test_oper_makes_an_admin_an_irc_operator(self):
        self.bob.send("OPER bob x", "OPER root " + PASSWORD)
        self.assertEqual(
            self.bob.lines(),
            [":test 491 bob :No O-lines for your host", ":test 491 bob :No O-lines for your host"],
        )
        self.root.send("OPER root wrong", "OPER boss " + PASSWORD, "OPER root")
        self.assertEqual(
            self.root.lines(),
            [
                ":test 464 root :Password incorrect",
                ":test 491 root :No O-lines for your host",
                ":test 461 root OPER :Not enough parameters",
            ],
        )
        self.root.send("OPER root " + PASSWORD, "MODE root")
        self.assertEqual(
            self.root.lines(),
            [
                ":test 381 root :You are now an IRC operator",
                ":root!root@chat MODE root :+o",
                ":test 221 root :+io",
            ],
        )
        self.bob.send("WHOIS root", "WHO root")
        lines = self.bob.lines()
        self.assertIn(":test 313 bob root :is an IRC operator", lines)
        self.assertIn(":test 352 bob * root chat test root H* :0 root the tester", lines)

    def test_kill_is_an_admin_kick(self):
        self.bob.send("KILL carol :go")
        self.assertEqual(self.bob.lines(), [":test 481 bob :Permission Denied- You're not an IRC operator"])
        self.root.send("OPER root " + PASSWORD)
        self.root.lines()
        self.root.send("KILL nobody :x", "KILL xn--!! :x", "KILL")
        self.assertEqual(
            self.root.lines(),
            [
                ":test 401 root nobody :No such nick/channel",
                ":test 401 root xn--!! :No such nick/channel",
                ":test 461 root KILL :Not enough parameters",
            ],
        )
        self.root.send("KILL carol :go away")
        self.assertEqual(
            self.bob.lines(),
            [
                ":root!root@chat NOTICE #general :kicked carol off the server: go away",
                ":carol!carol@chat QUIT :kicked",
            ],
        )
        self.assertTrue(self.carol.transport.disconnecting)
        self.assertIsNone(self.server.hub.session_for("carol"))

    def test_wallops_reach_every_irc_operator(self):
        self.root.send("WALLOPS :hello opers")
        self.assertEqual(self.root.lines(), [":test 481 root :Permission Denied- You're not an IRC operator"])
        self.root.send("OPER root " + PASSWORD)
        self.boss.send("OPER boss " + PASSWORD)
        for peer in (self.root, self.boss):
            peer.lines()
        self.root.send("WALLOPS :hello opers", "WALLOPS")
        self.assertEqual(
            self.root.lines(),
            [":root!root@chat WALLOPS :hello opers", ":test 461 root WALLOPS :Not enough parameters"],
        )
        self.assertEqual(self.boss.lines(), [":root!root@chat WALLOPS :hello opers"])
        self.assertEqual(self.bob.lines(), [])


class ClientTags(SynchronousTestCase):
    def test_tagmsg_relays_mapped_client_tags_and_drops_others(self):
        server = Server()
        alice, bob = registered(server, "alice", "bob", caps="message-tags")
        lines = IrcPeer(server).register("carol")
        isupport = next(parse(text)[3] for text in lines if parse(text)[2] == "005")
        self.assertIn("CLIENTTAGDENY=*,-draft/reply,-draft/react,-draft/unreact,-typing", isupport)
        in_room(server, "general", alice, bob)
        alice.send("PRIVMSG #general :react to me")
        (said,) = bob.lines()
        seq = parse(said)[0]["msgid"]
        alice.lines()
        bob.send(f"@+draft/react=👍;+draft/reply={seq};+foo=bar TAGMSG #general")
        self.assertEqual(
            alice.lines(), [f"@+draft/react=👍;+draft/reply={seq} :bob!bob@chat TAGMSG :#general"]
        )
        bob.send("@+foo=bar TAGMSG #general")
        self.assertEqual(alice.lines(), [], "an unknown client tag alone: dropped")


class IrcTestClient:
    """Our own IRC test client on a real socket (tests/netclient.py's raw
    client): registers with SASL PLAIN, its payload in 400-byte chunks."""

    def __init__(self, raw) -> None:
        self.raw = raw

    @defer.inlineCallbacks
    def register_with_sasl(self, account_name: str, password: str, caps: str = ""):
        raw = self.raw
        raw.send("CAP LS 302", f"CAP REQ :{' '.join(['sasl', *caps.split()])}")
        yield raw.expect(lambda text: " ACK " in text)
        raw.send("AUTHENTICATE PLAIN")
        yield raw.expect(lambda text: text == "AUTHENTICATE :+")
        raw.send(*sasl_chunks(account_name, password))
        yield raw.expect(lambda text: " 903 " in text)
        raw.send("NICK whatever", f"USER {account_name} 0 * :{account_name}", "CAP END")
        welcome = yield raw.expect(lambda text: " 001 " in text)
        return welcome


class LiveSasl(LiveTestCase):
    @defer.inlineCallbacks
    def test_sasl_in_chunks_then_client_tags_over_real_sockets(self):
        yield self.serve(irc=True)
        password = "k" * 595  # "\0ann\0" and it: 600 bytes, 800 of base64, then "+"
        tcp = yield self.client("ann", version=2)
        tcp.send(codec.AccountRequest("register", password, ref="r"))
        yield tcp.expect(codec.Done)
        tcp.send(codec.Quit())
        ann = IrcTestClient((yield self.irc()))
        self.assertEqual(sasl_chunks("ann", password)[-1], "AUTHENTICATE +")
        welcome = yield ann.register_with_sasl("ann", password, caps="message-tags")
        self.assertEqual(parse(welcome)[2:], ("001", ["ann", "Welcome to chat, ann"]), "the account's nick")
        bob = yield self.irc()
        bob.send("CAP LS 302", "CAP REQ :message-tags", "NICK bob", "USER bob 0 * :Bob", "CAP END")
        yield bob.expect(lambda text: " 001 " in text)
        for client in (ann.raw, bob):
            client.send("JOIN #general")
            yield client.expect(lambda text: " 366 " in text)
        ann.raw.send("PRIVMSG #general :react to this")
        said = yield bob.expect(lambda text: "PRIVMSG #general" in text)
        seq = parse(said)[0]["msgid"]
        bob.send(f"@+draft/react=🎉;+foo=bar;+draft/reply={seq} TAGMSG #general")
        tagmsg = yield ann.raw.expect(lambda text: " TAGMSG " in text)
        self.assertEqual(tagmsg, f"@+draft/react=🎉;+draft/reply={seq} :bob!bob@chat TAGMSG :#general")
        for client in (ann.raw, bob):
            client.send("QUIT")


def spent(peer: IrcPeer, *lines: str) -> float:
    """Units of its fair share ``peer`` is charged for ``lines`` (the clock
    stands still: nothing is paid back meanwhile)."""
    budget = peer.connection  # the policy is its own budget (core/budget.py Spender)
    before = budget._tokens
    peer.send(*lines)
    peer.lines()
    return before - budget._tokens


def _too_long(*_: object) -> None:
    raise AssertionError("still splitting after 10 seconds")


class LinesAreSafe(SynchronousTestCase):
    """Whatever a client or a reason holds, the gateway writes one line of
    at most 512 bytes (docs/protocol.md 17.1, 17.5)."""

    def test_line_breaks_nul_and_bad_middle_parameters_cant_break_a_line(self):
        self.assertEqual(
            irc_line("x!x@chat", "PART", "#a", "bye\r\n:test 001 you :forged\0"),
            ":x!x@chat PART #a :bye  :test 001 you :forged \r\n",
        )
        self.assertEqual(
            irc_line("test", "421", "carol", "", "Unknown command"), ":test 421 carol * :Unknown command\r\n"
        )
        self.assertEqual(irc_line("test", "696", "al", ":k", "a b", "why"), ":test 696 al * * :why\r\n")
        self.assertEqual(irc_line(None, "PING", "x", tags={"label": "a\0b"}), "@label=ab PING :x\r\n")

    def test_a_line_is_cut_at_512_bytes_between_characters(self):
        text = irc_line("tests", "NOTICE", "alice", "é" * 400)
        self.assertEqual(
            len(text.encode("utf-8")), 511, "510 and CR LF: a 2-byte character does not fit the last byte"
        )
        self.assertTrue(text.endswith("é\r\n"))

    def test_split_text_takes_a_whole_character_however_little_room(self):
        # Without a floor, no room made it loop for ever: an alarm fails it instead.
        signal.signal(signal.SIGALRM, _too_long)
        self.addCleanup(signal.signal, signal.SIGALRM, signal.SIG_DFL)
        self.addCleanup(signal.alarm, 0)
        signal.alarm(10)
        self.assertEqual(split_text("hé", 0), ["h", "é"])
        self.assertEqual(split_text("éa", -40), ["é", "a"])
        self.assertEqual(split_text("日本", 2), ["日", "本"], "a character wider than the room goes whole")

    def test_a_target_that_leaves_little_room_keeps_the_text_whole(self):
        wire = IrcWire("test", frozenset())
        target = "&" + "x" * 440  # with b...!b...@chat as the prefix, no room at all
        said = wire.privmsg({"from": "b" * 32, "text": "hello " * 10, "ts": 0}, target).split("\r\n")[:-1]
        self.assertEqual({parse(text)[1] for text in said}, {"b" * 32}, "the bare nick as the prefix")
        self.assertEqual("".join(parse(text)[3][1] for text in said), "hello " * 10)
        self.assertLessEqual(max(len(text.encode("utf-8")) + 2 for text in said), 512)

    def test_a_version_2_reason_cant_forge_lines_at_irc_users(self):
        server = Server()
        (irc,) = registered(server, "ircuser")
        irc.send("JOIN #x")
        (v2,) = server.logged_in("mallory", version=2)
        v2.join("x")
        irc.lines()
        v2.send(codec.Part("x", "bye\n:test 001 ircuser :fake\r\n:root!root@chat PRIVMSG #x :hi"))
        self.assertEqual(
            irc.lines(),
            [":mallory!mallory@chat PART #x :bye :test 001 ircuser :fake :root!root@chat PRIVMSG #x :hi"],
        )

    def test_a_message_in_a_non_ascii_channel_is_split_by_bytes(self):
        server = Server()
        alice, bob = registered(server, "alice", "bob")
        room = "日本語" * 10
        in_room(server, room, alice, bob)
        bob.lines()
        alice.send(f"PRIVMSG #{room} :" + "x" * 400)  # a 501-byte line in
        lines = bob.lines()
        self.assertEqual(len(lines), 2)
        self.assertLessEqual(max(len(text.encode("utf-8")) + 2 for text in lines), 512)
        self.assertEqual("".join(parse(text)[3][-1] for text in lines), "x" * 400)

    def test_names_are_whole_entries_in_lines_of_at_most_512_bytes(self):
        server = Server()
        names = [f"member_number_{i:03d}_pad" for i in range(30)]
        peers = registered(server, *names)
        in_room(server, "x", *peers)
        peers[0].lines()
        peers[0].send("NAMES #x")
        lines = peers[0].lines()
        entries = [entry for text in lines if parse(text)[2] == "353" for entry in parse(text)[3][-1].split()]
        self.assertEqual(sorted(entry.lstrip("@") for entry in entries), names)
        self.assertEqual(len(lines), 3, "two 353 and the 366")
        self.assertLessEqual(max(len(text.encode("utf-8")) + 2 for text in lines), 512)


class LongConversations(SynchronousTestCase):
    """A conversation whose ``&`` name would take most of a line is its short
    ``&~`` name, both ways (17.8)."""

    def test_a_long_amp_channel_is_its_short_name_and_works_both_ways(self):
        server = Server()
        nicks = ["가나다라마바사아자차카타파하가나다라마바사아자차카타파" + end for end in "하가나"]
        for nick in nicks:
            account(server, nick)
        server.flush()
        peers = []
        for nick in nicks:
            peer = IrcPeer(server)
            peer.register(irc_nick(nick), password=PASSWORD)
            peers.append(peer)
        full = "&" + "+".join(irc_nick(nick) for nick in nicks)
        self.assertGreater(len(full), 200)
        peers[0].send(f"JOIN {full}")
        join = peers[0].lines()[0]
        short = parse(join)[3][0]
        self.assertTrue(short.startswith("&~") and len(short) == 18, join)
        peers[1].lines()
        peers[0].send(f"PRIVMSG {short.upper()} :" + "hello " * 70)
        said = peers[1].lines()
        self.assertEqual({parse(text)[3][0] for text in said}, {short})
        self.assertEqual(" ".join(parse(text)[3][1] for text in said).split(), ["hello"] * 70)
        self.assertEqual(len(said), 2)
        self.assertLessEqual(max(len(text.encode("utf-8")) + 2 for text in said), 512)
        peers[1].send(f"NAMES {short}")
        self.assertEqual([parse(text)[2] for text in peers[1].lines()], ["353", "366"])


class Refusals(SynchronousTestCase):
    """A command refused before it becomes a packet is charged as a refusal,
    answered with its numeric, and only a few times in a row (17.4)."""

    def setUp(self):
        self.server = Server()
        self.alice, self.bob = registered(self.server, "alice", "bob")
        in_room(self.server, "x", self.alice, self.bob)
        self.alice.lines()

    def test_a_name_that_is_no_channel_or_nick_is_403_or_401_and_costs_a_refusal(self):
        for command, answer in (
            ("KICK nochan bob", ":test 403 alice nochan :No such channel"),
            ("TOPIC nochan :x", ":test 403 alice nochan :No such channel"),
            ("PRIVMSG # :x", ":test 403 alice # :No such channel"),
            ("KICK #x xn--!!!", ":test 401 alice xn--!!! :No such nick/channel"),
            ("JOIN &xn--!!!+bob", ":test 403 alice &xn--!!!+bob :No such channel"),
        ):
            self.alice.send("PING :good")  # errors are counted in a row
            self.alice.lines()
            self.assertEqual(spent(self.alice, command), 1 + REFUSAL, command)
            self.alice.send(command)
            self.assertEqual(self.alice.lines(), [answer])

    def test_refusals_in_a_row_are_answered_a_few_times_then_quietly(self):
        self.alice.send(*["TOPIC nochan :x"] * 10)
        answers = self.alice.lines()
        self.assertEqual(len(answers), ERROR_ANSWERS + 1, answers)
        self.assertIn("further errors", answers[-1])

    def test_names_reads_each_channel_once_and_is_charged_by_members(self):
        self.assertAlmostEqual(spent(self.alice, "NAMES " + ",".join(["#x"] * 100)), 1 + 2 / 10)
        self.alice.send("NAMES #x,#x,#X")
        self.assertEqual([parse(text)[2] for text in self.alice.lines()], ["353", "366"])
        self.alice.send("NAMES")
        self.assertEqual(self.alice.lines(), [":test 366 alice * :End of /NAMES list"])

    def test_a_who_mask_is_charged_by_the_members_it_reads(self):
        self.assertAlmostEqual(
            spent(self.alice, "WHO zzz*"), 1 + 3 / 10, msg="alice, and the two members of #x"
        )

    def test_whowas_with_a_huge_count(self):
        self.alice.send("WHOWAS bob 99999999999999999999999")
        self.assertEqual(
            self.alice.lines(),
            [":test 406 alice bob :There was no such nickname", ":test 369 alice bob :End of WHOWAS"],
        )

    def test_no_empty_middle_parameter(self):
        carol = IrcPeer(self.server)
        carol.register("carol", caps="message-tags")
        for sent, answer in (
            ("@+typing=active", ":test 421 carol * :Unknown command"),
            ("CAP", ":test 461 carol CAP :Not enough parameters"),
            ("WHOIS :", ":test 431 carol :No nickname given"),
            ("MODE carol :", ":test 221 carol :+i"),
        ):
            carol.send(sent)
            self.assertEqual(carol.lines(), [answer])

    def test_the_rest_of_an_overlong_line_is_no_command(self):
        self.alice.protocol.dataReceived(("PRIVMSG #x :" + "a" * 4700).encode())
        self.alice.protocol.dataReceived(b" JOIN #tail\r\nPING :next\r\n")
        self.assertEqual(
            self.alice.lines(), [":test 417 alice :Input line was too long", ":test PONG test :next"]
        )

    def test_a_long_realname_is_cut_not_dropped(self):
        carol = IrcPeer(self.server)
        carol.send("NICK carol", "USER carol 0 * :" + "R" * 250)
        carol.lines()
        self.alice.send("WHOIS carol")
        self.assertEqual(self.alice.lines()[0], ":test 311 alice carol carol chat * :" + "R" * 160)


class KickRecords(SynchronousTestCase):
    def test_a_ban_of_a_nick_not_here_makes_no_later_kick(self):
        server = Server()
        alice, carol = registered(server, "alice", "carol")
        in_room(server, "x", alice, carol)
        alice.send("MODE #x +b dave", "MODE #x -b dave")
        (dave,) = registered(server, "dave")
        in_room(server, "x", dave)
        carol.lines()
        connection = dave.connection
        connection.hub.leave(connection, "kicked")  # a flood cut, as ConnectionPolicy._pace does
        connection.disconnect("kicked")
        self.assertEqual(carol.lines(), [":dave!dave@chat QUIT :kicked"])


class ModeStrings(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.alice, self.bob = registered(self.server, "alice", "bob")
        in_room(self.server, "x", self.alice, self.bob)
        self.alice.lines()
        self.bob.lines()

    def test_a_refused_mode_string_changes_nothing(self):
        self.alice.send("MODE #x +ol bob abc")
        self.assertEqual(
            self.alice.lines(),
            [":test 696 alice #x l abc :a room's limit is 1 to 100000 members (0 for none)"],
        )
        self.assertEqual(self.bob.lines(), [], "no +o either")

    def test_a_key_starting_with_a_colon_is_refused(self):
        self.alice.send("MODE #x +k ::sesame")
        (refused,) = self.alice.lines()
        self.assertTrue(refused.startswith(":test 696 alice #x k * :a room key is"), refused)
        with self.assertRaises(codec.ProtocolError):
            check_key(":sesame")

    def test_devoice_of_a_member_not_voiced_is_nothing(self):
        self.alice.send("MODE #x -v bob", "MODE #x -v nobody")
        self.assertEqual(self.alice.lines(), [":test 441 alice nobody #x :They aren't on that channel"])

    def test_names_of_a_secret_channel_is_marked_at(self):
        self.alice.send("MODE #x +s")
        self.bob.lines()
        self.bob.send("NAMES #x")
        self.assertEqual(self.bob.lines()[0], ":test 353 bob @ #x :@alice bob")


class CapToggling(SynchronousTestCase):
    def test_cap_toggling_leaves_no_empty_groups_and_few_wires(self):
        server = Server()
        (alice,) = registered(server, "alice")
        alice.send("JOIN #x")
        caps = ["account-tag", "away-notify", "echo-message", "extended-join", "message-tags", "server-time"]
        for size in range(1, len(caps) + 1):
            for combo in itertools.combinations(caps, size):
                alice.send("CAP REQ :" + " ".join(combo), "CAP REQ :" + " ".join("-" + c for c in combo))
        alice.lines()
        channels = server.hub.broadcast._channels
        self.assertEqual([len(groups) for groups in channels.values()], [1] * len(channels))
        self.assertLessEqual(len(people_of(server.hub).wires), WIRES_KEPT)
        (bob,) = registered(server, "bob")
        bob.send("JOIN #x")
        alice.lines()
        bob.send("PRIVMSG #x :still here")
        self.assertEqual(alice.lines(), [":bob!bob@chat PRIVMSG #x :still here"])
