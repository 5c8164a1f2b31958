"""The IRC gateway's queries (WHOWAS, LUSERS, TIME, MOTD, VERSION, USERHOST, ISON) and
IRCv3 capabilities (labeled-response, account-tag, account-notify,
extended-join, setname, cap-notify, userhost-in-names), docs/protocol.md
17.10, line by line on StringTransport and task.Clock."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from chatproto import __version__, codec
from chatproto.transports import irc_people
from chatproto.transports.irc import parse
from tests.harness import Server
from tests.test_accounts import made_admin
from tests.test_irc import PASSWORD, IrcPeer, in_room, registered

#: What TIME and WHOWAS say at the start of task.Clock's time (0).
EPOCH = "Thursday January 01 1970 -- 00:00:00 +00:00"
#: Limits under which a day may pass on the clock without a PING or a timeout.
PATIENT = {"ping_interval": 1e6, "idle_timeout": 2e6}


def account(server: Server, nick: str) -> None:
    """Register ``nick`` as an account (over TCP), then leave."""
    (tcp,) = server.logged_in(nick, version=2)
    tcp.send(codec.AccountRequest("register", PASSWORD))
    tcp.received()
    tcp.send(codec.Quit())
    server.flush()


class Whowas(SynchronousTestCase):
    def test_departures_newest_first_with_when_and_real_name(self):
        server = Server(**PATIENT)
        (alice,) = registered(server, "alice")
        for realname in ("first Carol", "second Carol"):
            carol = IrcPeer(server)
            carol.send("NICK carol", f"USER carol 0 * :{realname}")
            server.clock.advance(60)
            carol.send("QUIT :bye")
            carol.lines()
        alice.send("WHOWAS carol")
        self.assertEqual(
            alice.lines(),
            [
                ":test 314 alice carol carol chat * :second Carol",
                ":test 312 alice carol test :Thursday January 01 1970 -- 00:02:00 +00:00",
                ":test 314 alice carol carol chat * :first Carol",
                ":test 312 alice carol test :Thursday January 01 1970 -- 00:01:00 +00:00",
                ":test 369 alice carol :End of WHOWAS",
            ],
        )
        alice.send("WHOWAS CAROL 1")
        self.assertEqual(alice.numerics(), ["314", "312", "369"])

    def test_unknown_nick_is_406_and_no_nick_431(self):
        server = Server()
        (alice,) = registered(server, "alice")
        alice.send("WHOWAS nobody,xn--!!", "WHOWAS")
        self.assertEqual(
            alice.lines(),
            [
                ":test 406 alice nobody :There was no such nickname",
                ":test 369 alice nobody :End of WHOWAS",
                ":test 406 alice xn--!! :There was no such nickname",
                ":test 369 alice xn--!! :End of WHOWAS",
                ":test 431 alice :No nickname given",
            ],
        )

    def test_a_guest_without_a_real_name_was_its_nick_and_only_the_last_are_kept(self):
        self.patch(irc_people, "WHOWAS_KEPT", 2)
        server = Server()
        (alice,) = registered(server, "alice")
        for nick in ("bob", "carol", "dave"):
            (tcp,) = server.logged_in(nick, version=2)
            tcp.send(codec.Quit())
            server.flush()
        alice.send("WHOWAS bob", "WHOWAS dave")
        self.assertEqual(
            alice.lines(),
            [
                ":test 406 alice bob :There was no such nickname",
                ":test 369 alice bob :End of WHOWAS",
                ":test 314 alice dave dave chat * :dave",
                f":test 312 alice dave test :{EPOCH}",
                ":test 369 alice dave :End of WHOWAS",
            ],
        )


class Lusers(SynchronousTestCase):
    def test_counts_of_this_node(self):
        server = Server(admins=["root"])
        made_admin(server, "root", PASSWORD)
        (alice,) = registered(server, "alice")
        root = IrcPeer(server)
        root.register("root", password=PASSWORD)
        pending = IrcPeer(server)  # connected, not registered
        in_room(server, "den", alice)
        alice.send("LUSERS")
        self.assertEqual(
            alice.lines(),
            [
                ":test 251 alice :There are 0 users and 2 invisible on 1 servers",
                ":test 252 alice 1 :operator(s) online",
                ":test 253 alice 1 :unknown connection(s)",
                ":test 254 alice 2 :channels formed",
                ":test 255 alice :I have 2 clients and 0 servers",
                ":test 265 alice 2 2 :Current local users 2, max 2",
                ":test 266 alice 2 2 :Current global users 2, max 2",
            ],
        )
        pending.drop()
        root.drop()
        alice.send("LUSERS")
        self.assertIn(":test 265 alice 1 2 :Current local users 1, max 2", alice.lines())


class Time(SynchronousTestCase):
    def test_time_here_and_402_elsewhere(self):
        server = Server(**PATIENT)
        (alice,) = registered(server, "alice")
        server.clock.advance(86400 + 3661)
        alice.send("TIME", "TIME test", "TIME elsewhere.example")
        self.assertEqual(
            alice.lines(),
            [
                ":test 391 alice test :Friday January 02 1970 -- 01:01:01 +00:00",
                ":test 391 alice test :Friday January 02 1970 -- 01:01:01 +00:00",
                ":test 402 alice elsewhere.example :No such server",
            ],
        )


class MotdVersion(SynchronousTestCase):
    def test_motd_again_and_402_elsewhere(self):
        server = Server()
        (alice,) = registered(server, "alice")
        alice.send("MOTD", "MOTD elsewhere.example")
        self.assertEqual(
            alice.lines(),
            [
                ":test 375 alice :- test Message of the day -",
                ":test 372 alice :- hello",
                ":test 376 alice :End of /MOTD command",
                ":test 402 alice elsewhere.example :No such server",
            ],
        )

    def test_no_motd_is_422(self):
        server = Server()
        server.hub.assembler.motd = ""  # as a server started without --motd
        (alice,) = registered(server, "alice")
        alice.send("MOTD")
        self.assertEqual(alice.lines(), [":test 422 alice :MOTD File is missing"])

    def test_version_is_351_and_the_005_tokens(self):
        server = Server()
        (alice,) = registered(server, "alice")
        alice.send("VERSION")
        lines = alice.lines()
        self.assertEqual(
            lines[0], f":test 351 alice chatproto-{__version__} test :IRC gateway of a chatproto server"
        )
        self.assertEqual([parse(text)[2] for text in lines], ["351", "005"])
        self.assertIn("PREFIX=(ov)@+", parse(lines[1])[3])

    def test_before_registration_451(self):
        server = Server()
        peer = IrcPeer(server)
        peer.send("VERSION", "MOTD")
        self.assertEqual([parse(text)[2] for text in peer.lines()], ["451", "451"])


class UserhostIson(SynchronousTestCase):
    def test_userhost_marks_admins_and_the_away_and_answers_five(self):
        server = Server(admins=["root"])
        made_admin(server, "root", PASSWORD)
        IrcPeer(server).register("root", password=PASSWORD)
        (alice,) = registered(server, "alice", "bob", "carol", "dave", "erin")[:1]
        alice.send("AWAY :lunch")
        alice.lines()
        alice.send("USERHOST root alice nobody", "USERHOST bob carol dave erin alice root", "USERHOST")
        self.assertEqual(
            alice.lines(),
            [
                ":test 302 alice :root*=+root@chat alice=-alice@chat",
                ":test 302 alice :bob=+bob@chat carol=+carol@chat dave=+dave@chat erin=+erin@chat"
                " alice=-alice@chat",
                ":test 461 alice USERHOST :Not enough parameters",
            ],
        )

    def test_ison_names_those_present_as_the_server_spells_them(self):
        server = Server()
        alice, _ = registered(server, "alice", "Bob")
        alice.send("ISON bob nobody ALICE xn--!!", "ISON :nobody", "ISON")
        self.assertEqual(
            alice.lines(),
            [
                ":test 303 alice :Bob alice",
                ":test 303 alice :",
                ":test 461 alice ISON :Not enough parameters",
            ],
        )

    def test_queries_are_charged_like_commands(self):
        for command in (
            "WHOWAS x",
            "LUSERS",
            "TIME",
            "MOTD",
            "VERSION",
            "USERHOST a",
            "ISON a b",
            "SETNAME :x",
            "SETNAME :",
        ):
            server = Server(packet_rate=10, packet_burst=10)
            (alice,) = registered(server, "alice")
            server.clock.advance(1)
            alice.lines()
            alice.send(*[command] * 40)
            self.assertEqual(alice.transport.producerState, "paused", f"{command} flooded for free")


class LabeledResponse(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.alice, self.bob = registered(self.server, "alice", "bob", caps="labeled-response batch")
        in_room(self.server, "x", self.alice, self.bob)

    def test_one_line_is_tagged_none_is_ack_several_are_a_batch(self):
        alice = self.alice
        alice.send("@label=a1 TIME", "@label=a2 PONG :x", "@label=a3 NAMES #x")
        lines = alice.lines()
        batch = lines[2].split()[3][1:]
        self.assertEqual(
            lines,
            [
                f"@label=a1 :test 391 alice test :{EPOCH}",
                "@label=a2 :test ACK",
                f"@label=a3 :test BATCH +{batch} labeled-response",
                f"@batch={batch} :test 353 alice = #x :@alice bob",
                f"@batch={batch} :test 366 alice #x :End of /NAMES list",
                f":test BATCH -{batch}",
            ],
        )

    def test_a_refusal_and_a_later_answer_carry_the_label(self):
        alice, bob = self.alice, self.bob
        alice.send("@label=b1 PRIVMSG #nope :x", "@label=b2 TOPIC #x :new topic", "@label=b3 PRIVMSG #x :hi")
        self.assertEqual(
            alice.lines(),
            [
                "@label=b1 :test 403 alice #nope :there is no room called 'nope'",
                "@label=b2 :alice!alice@chat TOPIC #x :new topic",
                "@label=b3 :test ACK",  # no echo-message: nothing else answers it
            ],
        )
        self.assertEqual(
            bob.lines(), [":alice!alice@chat TOPIC #x :new topic", ":alice!alice@chat PRIVMSG #x :hi"]
        )

    def test_the_echo_of_a_labeled_message_is_its_answer(self):
        alice = self.alice
        alice.send("CAP REQ echo-message")
        alice.lines()
        long = "é" * 245  # 490 bytes: a line in, two out (with the prefix)
        alice.send(f"@label=c1 PRIVMSG #x :{long}", "@label=c2 PRIVMSG #x :two")
        lines = alice.lines()
        batch = lines[0].split()[3][1:]
        first, second = (parse(text)[3][1] for text in lines[1:3])
        self.assertEqual(first + second, long)
        self.assertEqual(
            lines,
            [
                f"@label=c1 :test BATCH +{batch} labeled-response",
                f"@batch={batch} :alice!alice@chat PRIVMSG #x :{first}",
                f"@batch={batch} :alice!alice@chat PRIVMSG #x :{second}",
                f":test BATCH -{batch}",
                "@label=c2 :alice!alice@chat PRIVMSG #x :two",
            ],
        )
        self.assertEqual(
            self.bob.lines(),
            [
                f":alice!alice@chat PRIVMSG #x :{first}",
                f":alice!alice@chat PRIVMSG #x :{second}",
                ":alice!alice@chat PRIVMSG #x :two",
            ],
        )

    def test_unknown_commands_silent_refusals_and_typing_are_answered_at_once(self):
        self.alice.send(
            "@label=f1 FROB",
            "@label=f2 NOTICE #nope :x",
            "@label=f3;+typing=active TAGMSG #x",
            "@label=f4 TIME",
        )
        self.assertEqual(
            self.alice.lines(),
            [
                "@label=f1 :test 421 alice FROB :Unknown command",
                "@label=f2 :test ACK",  # a NOTICE is never answered with an error
                "@label=f3 :test ACK",
                f"@label=f4 :test 391 alice test :{EPOCH}",
            ],
        )

    def test_a_history_batch_nests_in_the_labeled_one(self):
        self.bob.send("PRIVMSG #x :old news")
        self.alice.lines()
        self.alice.send("@label=g1 CHATHISTORY LATEST #x * 5")
        lines = self.alice.lines()
        outer, inner = lines[0].split()[3][1:], lines[1].split()[3][1:]
        self.assertEqual(
            lines,
            [
                f"@label=g1 :test BATCH +{outer} labeled-response",
                f"@batch={outer} :test BATCH +{inner} chathistory :#x",
                f"@batch={inner} :bob!bob@chat PRIVMSG #x :old news",
                f"@batch={outer} :test BATCH :-{inner}",
                f":test BATCH -{outer}",
            ],
        )

    def test_an_unlabeled_echo_is_as_without_the_cap(self):
        alice = self.alice
        alice.send("CAP REQ echo-message")
        alice.lines()
        alice.send("PRIVMSG #x :plain", "TOPIC #x :plain topic")
        self.assertEqual(
            alice.lines(), [":alice!alice@chat PRIVMSG #x :plain", ":alice!alice@chat TOPIC #x :plain topic"]
        )

    def test_no_label_without_the_cap_and_an_overlong_one_is_ignored(self):
        (carol,) = registered(self.server, "carol")
        carol.send("@label=d1 TIME")
        self.assertEqual(carol.lines(), [f":test 391 carol test :{EPOCH}"])
        self.alice.send(f"@label={'x' * 65} TIME")
        self.assertEqual(self.alice.lines(), [f":test 391 alice test :{EPOCH}"])

    def test_a_labeled_quit_still_says_goodbye(self):
        self.alice.send("@label=e1 QUIT :bye")
        self.assertEqual(self.alice.lines(), ["ERROR :Closing link: alice (Quit)"])


class Accounts(SynchronousTestCase):
    def test_account_tag_and_extended_join_name_accounts_and_guests(self):
        server = Server()
        account(server, "ann")
        (watcher,) = registered(server, "watcher", caps="account-tag extended-join")
        in_room(server, "x", watcher)
        ann = IrcPeer(server)
        ann.register("ann", password=PASSWORD)
        (guest,) = registered(server, "guest")
        ann.send("JOIN #x")
        guest.send("JOIN #x")
        ann.send("PRIVMSG #x :from an account")
        guest.send("PRIVMSG #x :from a guest")
        self.assertEqual(
            watcher.lines(),
            [
                ":ann!ann@chat JOIN #x ann :ann the tester",
                ":guest!guest@chat JOIN #x * :guest the tester",
                "@account=ann :ann!ann@chat PRIVMSG #x :from an account",
                ":guest!guest@chat PRIVMSG #x :from a guest",
            ],
        )
        watcher.send("CAP REQ message-tags")
        watcher.lines()
        ann.send("@+typing=active TAGMSG #x")
        self.assertEqual(watcher.lines(), ["@+typing=active;account=ann :ann!ann@chat TAGMSG :#x"])

    def test_account_notify_when_a_session_registers_and_deletes_its_account(self):
        server = Server()
        (watcher, plain) = registered(server, "watcher", "plain")
        watcher.send("CAP REQ account-notify")
        watcher.lines()
        (tcp,) = server.logged_in("ann", version=2)
        for peer in (watcher, plain):
            peer.send("JOIN #x")
        tcp.send(codec.Join("x"))
        server.flush()
        watcher.lines()
        plain.lines()
        tcp.send(codec.AccountRequest("register", PASSWORD))
        self.assertEqual(watcher.lines(), [":ann!ann@chat ACCOUNT :ann"])
        tcp.send(codec.AccountRequest("delete", PASSWORD))
        self.assertEqual(watcher.lines(), [":ann!ann@chat ACCOUNT :*"])
        self.assertEqual(plain.lines(), [])


class Setname(SynchronousTestCase):
    def test_setname_reaches_peers_with_the_cap_and_shows_in_whois_and_joins(self):
        server = Server()
        (alice,) = registered(server, "alice", caps="setname")
        (bob,) = registered(server, "bob", caps="setname extended-join")
        (carol,) = registered(server, "carol")
        (lone,) = registered(server, "lone", caps="setname")
        in_room(server, "x", alice, bob, carol)
        alice.send("SETNAME :Alice Liddell")
        self.assertEqual(alice.lines(), [":alice!alice@chat SETNAME :Alice Liddell"])
        self.assertEqual(bob.lines(), [":alice!alice@chat SETNAME :Alice Liddell"])
        self.assertEqual(carol.lines(), [])
        self.assertEqual(lone.lines(), [])
        carol.send("WHOIS alice")
        self.assertIn(":test 311 carol alice alice chat * :Alice Liddell", carol.lines())
        alice.send("JOIN #y")
        alice.lines()
        bob.send("JOIN #y")
        self.assertEqual(bob.lines()[0], ":bob!bob@chat JOIN #y * :bob the tester")
        alice.send("PART #y")
        alice.lines()
        bob.lines()
        alice.send("JOIN #y")
        self.assertEqual(bob.lines(), [":alice!alice@chat JOIN #y * :Alice Liddell"])

    def test_isupport_says_how_long_a_real_name_may_be(self):
        lines = IrcPeer(Server()).register("alice")
        isupport = next(parse(text)[3] for text in lines if parse(text)[2] == "005")
        self.assertIn("NAMELEN=200", isupport)

    def test_a_bad_real_name_is_a_fail(self):
        server = Server()
        (alice,) = registered(server, "alice", caps="setname")
        alice.send("SETNAME", "SETNAME :" + "x" * 201, "SETNAME :tab\there")
        self.assertEqual(alice.lines(), [":test FAIL SETNAME INVALID_REALNAME :Realname is not valid"] * 3)


class CapAfterRegistration(SynchronousTestCase):
    def test_req_after_registration_changes_what_the_client_gets(self):
        server = Server()
        alice, bob = registered(server, "alice", "bob")
        in_room(server, "x", alice, bob)
        alice.send("CAP REQ :server-time message-tags", "CAP LIST")
        self.assertEqual(
            alice.lines(),
            [
                ":test CAP alice ACK :server-time message-tags",
                ":test CAP alice LIST :message-tags server-time",
            ],
        )
        bob.send("PRIVMSG #x :tagged")
        (said,) = alice.lines()
        self.assertTrue(said.startswith("@time=1970-01-01T00:00:00.000Z;msgid="), said)
        alice.send("CAP REQ :-server-time -message-tags")
        self.assertEqual(alice.lines(), [":test CAP alice ACK :-server-time -message-tags"])
        bob.send("PRIVMSG #x :plain")
        self.assertEqual(alice.lines(), [":bob!bob@chat PRIVMSG #x :plain"])
        self.assertIs(alice.connection.wire, bob.connection.wire, "one wire per set of capabilities")

    def test_away_notify_asked_for_after_registration(self):
        server = Server()
        alice, bob = registered(server, "alice", "bob")
        in_room(server, "x", alice, bob)
        bob.send("AWAY :lunch")
        bob.lines()
        self.assertEqual(alice.lines(), [])
        alice.send("CAP REQ away-notify")
        alice.lines()
        bob.send("AWAY")
        self.assertEqual(alice.lines(), [":bob!bob@chat AWAY"])

    def test_nak_for_unknown_caps_sasl_once_registered_and_dropping_cap_notify_after_302(self):
        server = Server()
        (alice,) = registered(server, "alice", caps="batch")
        alice.send("CAP REQ :batch nonsense", "CAP REQ :sasl", "CAP REQ :-cap-notify")
        alice.send("CAP REQ :", "CAP LIST")
        self.assertEqual(
            alice.lines(),
            [
                ":test CAP alice NAK :batch nonsense",
                ":test CAP alice NAK :sasl",
                ":test CAP alice NAK :-cap-notify",
                ":test CAP alice NAK :",
                ":test CAP alice LIST :batch cap-notify",
            ],
        )

    def test_cap_notify_can_be_asked_for_without_302(self):
        server = Server()
        peer = IrcPeer(server)
        peer.send("CAP LS", "CAP REQ cap-notify", "NICK alice", "USER a 0 * :A", "CAP END")
        lines = peer.lines()
        self.assertEqual(lines[1], ":test CAP * ACK :cap-notify")
        peer.send("CAP REQ -cap-notify", "CAP LIST")
        self.assertEqual(peer.lines(), [":test CAP alice ACK :-cap-notify", ":test CAP alice LIST :"])


class UserhostInNames(SynchronousTestCase):
    def test_names_with_userhosts_only_for_those_who_asked(self):
        server = Server()
        (alice,) = registered(server, "alice", caps="userhost-in-names")
        (bob,) = registered(server, "bob")
        in_room(server, "x", alice, bob)
        alice.send("NAMES #x")
        bob.send("NAMES #x")
        self.assertEqual(alice.lines()[0], ":test 353 alice = #x :@alice!alice@chat bob!bob@chat")
        self.assertEqual(bob.lines()[0], ":test 353 bob = #x :@alice bob")


class LabelsOfLaterAnswers(SynchronousTestCase):
    """KICK, INVITE and NICK are answered by what comes after them, with
    their label; a capability taken back drops the labels waiting (17.10)."""

    def setUp(self):
        self.server = Server()
        self.alice, self.bob = registered(self.server, "alice", "bob", caps="labeled-response batch")
        in_room(self.server, "x", self.alice, self.bob)
        self.alice.lines()
        self.bob.lines()

    def test_a_labeled_kick_is_answered_by_the_kick(self):
        self.alice.send("@label=k1 KICK #x bob :bye")
        self.assertEqual(self.alice.lines(), ["@label=k1 :alice!alice@chat KICK #x bob :bye"])
        self.assertEqual(self.bob.lines(), [":alice!alice@chat KICK #x bob :bye"])

    def test_a_labeled_invite_is_answered_by_341_and_nick_by_the_nick_line(self):
        registered(self.server, "carol")
        self.alice.send("@label=i1 INVITE carol #x")
        self.assertEqual(self.alice.lines(), ["@label=i1 :test 341 alice carol :#x"])
        self.alice.send("@label=n1 NICK alicia")
        self.assertEqual(self.alice.lines(), ["@label=n1 :alice!alice@chat NICK :alicia"])

    def test_taking_labeled_response_back_drops_the_labels_waiting(self):
        self.alice.send("@label=w1 PRIVMSG #x :a", "CAP REQ :-labeled-response")
        self.alice.lines()
        self.alice.send("CAP REQ :labeled-response echo-message", "@label=w2 PRIVMSG #x :b")
        self.assertEqual(
            self.alice.lines(),
            [
                ":test CAP alice ACK :labeled-response echo-message",
                "@label=w2 :alice!alice@chat PRIVMSG #x :b",
            ],
        )
