"""Accounts (docs/protocol.md, section 15): registering, passwords, guessing
limits, several devices, remembered rooms and read markers. On
StringTransport and task.Clock; the KDF runs inline at a low cost."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.codec import ErrorCode
from chatproto.core.accounts import RESUME_GRACE
from chatproto.core.connection import token_text
from chatproto.passwords import Hasher, check_password, hash_password, verify_password
from chatproto.rules import nick_key
from tests.harness import Server, result

PASSWORD = "correct horse"


def registered(server: Server, nick: str, password: str = PASSWORD, host: str = "127.0.0.1"):
    """A version 2 guest that registers its nick: now an account, logged in."""
    peer = server.peer(host)
    peer.login(nick, version=2)
    peer.received()
    peer.send(codec.AccountRequest("register", password, ref="reg"))
    assert peer.only(codec.Done, flush=False) == codec.Done("register", nick, "reg")
    return peer


def made_admin(server: Server, nick: str, password: str = PASSWORD) -> None:
    """The account the server made at start for ``--admin nick``: its
    operator logs in with the one-time password from the log, changes it to
    ``password``, and quits."""
    first = server.hub.accounts.setup_passwords[nick_key(nick)]
    peer = server.peer()
    peer.send(codec.Login(nick, 2, password=first))
    assert peer.received()[0].admin
    peer.send(codec.AccountRequest("password", first, password, ref="p"))
    assert peer.only(codec.Done, flush=False) == codec.Done("password", nick, "p")
    peer.send(codec.Quit())


def device(server: Server, nick: str, password: str = PASSWORD, host: str = "127.0.0.1"):
    """One more connection logged in to an account; its WELCOME and ROOMs."""
    peer = server.peer(host)
    peer.send(codec.Login(nick, 2, password=password))
    return peer, peer.received()


def refused(server: Server, nick: str, password: str | None, version: int = 2, host: str = "127.0.0.1"):
    peer = server.peer(host)
    peer.send(codec.Login(nick, version, password=password, ref="l"))
    return peer.error()


class Passwords(SynchronousTestCase):
    def test_a_stored_secret_is_salted_scrypt_that_verifies_only_its_password(self):
        one, two = hash_password("hunter22", n=2**10), hash_password("hunter22", n=2**10)
        self.assertTrue(one.startswith("scrypt$1024$8$1$"))
        self.assertNotEqual(one, two, "a fresh salt each time")
        self.assertNotIn("hunter22", one)
        self.assertTrue(verify_password("hunter22", one))
        self.assertFalse(verify_password("hunter23", one))
        self.assertFalse(verify_password("hunter22", "garbage"))

    def test_weak_passwords_are_refused(self):
        for password in ("short", "ann", "x" * 1025):
            with self.assertRaises(codec.ProtocolError) as caught:
                check_password(password, "ann" if password == "ann" else "bob")
            self.assertEqual(caught.exception.code, ErrorCode.WEAK_PASSWORD)

    def test_a_password_never_shows_in_a_packet_repr(self):
        self.assertNotIn(PASSWORD, repr(codec.Login("ann", 2, password=PASSWORD)))
        self.assertNotIn(PASSWORD, repr(codec.AccountRequest("password", PASSWORD, PASSWORD)))


class Registering(SynchronousTestCase):
    def register_from(self, server: Server, nick: str, host: str):
        peer = server.peer(host)
        peer.login(nick, version=2)
        peer.received()
        peer.send(codec.AccountRequest("register", PASSWORD, ref="reg"))
        return peer.received()[0]

    def test_one_address_registers_a_few_accounts_then_waits(self):
        server = Server(register_rate=10, register_burst=3)
        for i in range(3):
            self.assertIsInstance(self.register_from(server, f"bot{i}", "203.0.113.5"), codec.Done)
        refused = self.register_from(server, "bot3", "203.0.113.5")
        self.assertEqual((refused.code, refused.retry_after), (ErrorCode.RATE_LIMITED, 360))
        self.assertIsInstance(self.register_from(server, "other", "198.51.100.1"), codec.Done, "per address")
        server.clock.advance(360)
        self.assertIsInstance(self.register_from(server, "bot4", "203.0.113.5"), codec.Done)

    def test_the_server_keeps_at_most_max_accounts(self):
        server = Server(max_accounts=2)
        for i in range(2):
            self.assertIsInstance(self.register_from(server, f"user{i}", f"198.51.100.{i}"), codec.Done)
        refused = self.register_from(server, "third", "198.51.100.9")
        self.assertEqual(refused.code, ErrorCode.NOT_PERMITTED)
        self.assertIn("no more accounts", refused.message)

    def test_a_registered_nick_needs_its_password(self):
        server = Server()
        ann = registered(server, "ann")
        ann.send(codec.Quit())
        self.assertEqual(refused(server, "ann", None).code, ErrorCode.NICK_REGISTERED)
        self.assertEqual(refused(server, "ANN", None, version=1).code, ErrorCode.NICK_TAKEN, "what v1 knows")
        wrong = refused(server, "ann", "wrong password")
        self.assertEqual((wrong.code, wrong.ref), (ErrorCode.BAD_PASSWORD, "l"))
        _, packets = device(server, "ann")
        welcome = packets[0]
        self.assertEqual((welcome.nick, welcome.account, welcome.admin), ("ann", True, False))

    def test_wrong_nick_and_wrong_password_look_the_same(self):
        server = Server()
        registered(server, "ann").send(codec.Quit())
        nobody = refused(server, "nobody", "some password")
        wrong = refused(server, "ann", "some password")
        self.assertEqual((nobody.code, nobody.message), (wrong.code, wrong.message))

    def test_guests_are_unchanged(self):
        server = Server()
        ann = registered(server, "ann")
        bob = server.peer()
        self.assertEqual(bob.login("bob", version=2).account, False)
        self.assertEqual(refused(server, "ann", None).code, ErrorCode.NICK_REGISTERED)
        self.assertIsNotNone(ann.connection.session, "the account's session is untouched")

    def test_the_password_is_stored_hashed_and_never_logged(self):
        server = Server()
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        registered(server, "ann").send(codec.Quit())
        refused(server, "ann", "a wrong guess")
        record = result(server.hub.store.account("ann"))
        self.assertTrue(record.secret.startswith("scrypt$"))
        self.assertNotIn(PASSWORD, record.secret)
        text = repr(events)
        self.assertNotIn(PASSWORD, text)
        self.assertNotIn("a wrong guess", text)

    def test_register_twice_and_weak_password(self):
        server = Server()
        ann = registered(server, "ann")
        ann.send(codec.AccountRequest("register", "another one", ref="x"))
        self.assertEqual(ann.error().code, ErrorCode.ALREADY_REGISTERED)
        bob = server.peer()
        bob.login("bob", version=2)
        bob.received()
        bob.send(codec.AccountRequest("register", "bob", ref="x"))
        self.assertEqual(bob.error().code, ErrorCode.WEAK_PASSWORD)
        bob.send(codec.AccountRequest("password", "whatever1", "whatever2", ref="y"))
        self.assertEqual(bob.error().code, ErrorCode.NOT_REGISTERED)

    def test_change_password_then_delete_the_account(self):
        server = Server()
        ann = registered(server, "ann")
        ann.send(codec.AccountRequest("password", "wrong one!", "new password", ref="p"))
        self.assertEqual(ann.error().code, ErrorCode.BAD_PASSWORD)
        ann.send(codec.AccountRequest("password", PASSWORD, "new password", ref="p"))
        self.assertEqual(ann.only(codec.Done, flush=False), codec.Done("password", "ann", "p"))
        ann.send(codec.Quit())
        self.assertEqual(refused(server, "ann", PASSWORD).code, ErrorCode.BAD_PASSWORD)
        ann, _ = device(server, "ann", "new password")
        ann.send(codec.AccountRequest("delete", "new password", ref="d"))
        self.assertEqual(ann.only(codec.Done, flush=False), codec.Done("delete", "ann", "d"))
        ann.send(codec.Quit())
        self.assertEqual(server.peer().login("ann", version=2).account, False, "a guest's nick again")

    def test_v1_clients_cannot_send_account_packets(self):
        server = Server()
        (old,) = server.logged_in("old")
        old.send(codec.AccountRequest("register", PASSWORD, ref="r"))
        self.assertEqual(old.error().code, ErrorCode.UNKNOWN_TYPE)


class AccountOrderOfChecks(SynchronousTestCase):
    """ACCOUNT's checks in the order of docs/protocol.md 15.2: a request that
    fails two gets the first one's error."""

    def refused(self, peer, op: str, password: str | None, new: str | None = None):
        peer.received()
        peer.send(codec.AccountRequest(op, password, new, ref="a"))
        return peer.error().code

    def test_password_change(self):
        server = Server(login_failures=1, lockout=60.0, join_burst=100)
        guest = server.peer()
        guest.login("gus", version=2)
        self.assertEqual(self.refused(guest, "password", "wrong pass", "short"), ErrorCode.NOT_REGISTERED)
        self.assertEqual(self.refused(guest, "frobnicate", None), ErrorCode.BAD_PACKET)
        ann = registered(server, "ann")
        self.assertEqual(self.refused(ann, "register", "short"), ErrorCode.ALREADY_REGISTERED)
        self.assertEqual(self.refused(ann, "password", "wrong pass", None), ErrorCode.BAD_PACKET)
        self.assertEqual(self.refused(ann, "password", "wrong pass", "short"), ErrorCode.WEAK_PASSWORD)
        # ... and not counted as a guess: login_failures is 1, yet the next is checked
        self.assertEqual(self.refused(ann, "password", "wrong pass", "a good one"), ErrorCode.BAD_PASSWORD)
        self.assertEqual(self.refused(ann, "password", "wrong pass", "short"), ErrorCode.LOCKED_OUT)
        self.assertEqual(self.refused(ann, "delete", "wrong pass"), ErrorCode.LOCKED_OUT)

    def test_register(self):
        server = Server(register_burst=1, join_burst=100)
        registered(server, "ann", host="203.0.113.1")
        bob = server.peer("203.0.113.1")
        bob.login("bob", version=2)
        self.assertEqual(self.refused(bob, "register", None), ErrorCode.BAD_PACKET)
        self.assertEqual(self.refused(bob, "register", "bob"), ErrorCode.WEAK_PASSWORD, "before the rate")
        self.assertEqual(self.refused(bob, "register", PASSWORD), ErrorCode.RATE_LIMITED)


class Guessing(SynchronousTestCase):
    def test_wrong_passwords_slow_the_account_down_to_a_lock_out_that_expires(self):
        server = Server(login_failures=3, lockout=60.0)
        registered(server, "ann").send(codec.Quit())
        for _ in range(3):
            self.assertEqual(refused(server, "ann", "guess", host="203.0.113.1").code, ErrorCode.BAD_PASSWORD)
        locked = refused(server, "ann", PASSWORD, host="198.51.100.7")
        self.assertEqual(locked.code, ErrorCode.LOCKED_OUT, "the right password from elsewhere waits too")
        self.assertEqual(locked.retry_after, 1)
        server.clock.advance(1)
        self.assertEqual(refused(server, "ann", "guess").code, ErrorCode.BAD_PASSWORD)
        self.assertEqual(refused(server, "ann", "guess").retry_after, 2, "the wait doubles")
        for _ in range(8):  # keep guessing as soon as allowed: the wait reaches the lock-out
            server.clock.advance(refused(server, "ann", "guess").retry_after or 0)
            refused(server, "ann", "guess")
        locked = refused(server, "ann", PASSWORD)
        self.assertEqual((locked.code, locked.retry_after), (ErrorCode.LOCKED_OUT, 60))
        server.clock.advance(60)
        _, packets = device(server, "ann")
        self.assertIsInstance(packets[0], codec.Welcome, "the lock-out expired")
        for _ in range(3):
            self.assertEqual(refused(server, "ann", "guess").code, ErrorCode.BAD_PASSWORD, "counted afresh")

    def test_a_connection_gets_three_password_tries(self):
        """Guessing on one connection: after three refusals it is closed, so
        more guesses need new connections, which the address limits pace."""
        server = Server(login_failures=100)
        registered(server, "ann").send(codec.Quit())
        peer = server.peer("203.0.113.1")
        for i in range(3):
            peer.send(codec.Login("ann", 2, password=f"guess {i}", ref=f"g{i}"))
        packets = peer.received()
        self.assertEqual([p.code for p in packets if isinstance(p, codec.Error)], ["bad_password"] * 3)
        self.assertEqual(packets[-1], codec.Bye("too_many_attempts"))
        self.assertTrue(peer.closing)

    def test_one_address_guessing_many_accounts_is_locked_out(self):
        server = Server(login_failures=2)
        for i in range(8):
            self.assertEqual(
                refused(server, f"n{i}", "guess", host="203.0.113.9").code, ErrorCode.BAD_PASSWORD
            )
        self.assertEqual(refused(server, "n9", "guess", host="203.0.113.9").code, ErrorCode.LOCKED_OUT)
        self.assertEqual(refused(server, "n9", "guess", host="203.0.113.10").code, ErrorCode.BAD_PASSWORD)


class QueuedHasher(Hasher):
    """Checks wait in a queue, as on the thread pool, until released."""

    def __init__(self) -> None:
        self.queue: list[tuple[Deferred, object]] = []
        self.ran = 0
        super().__init__(self._enqueue, (2**10, 8, 1))

    def _enqueue(self, call) -> Deferred:
        d = Deferred(lambda d: self.queue.remove((d, call)))  # cancelled: never runs
        self.queue.append((d, call))
        return d

    def release(self) -> None:
        while self.queue:
            d, call = self.queue.pop(0)
            self.ran += 1
            d.callback(call())


class GuessesInParallel(SynchronousTestCase):
    def setUp(self):
        self.hasher = QueuedHasher()
        self.server = Server(
            login_failures=3, lockout=900.0, hasher=self.hasher, max_per_address=1000, address_burst=1000
        )
        self.register("ann")

    def register(self, nick: str) -> None:
        peer = self.server.peer()
        peer.login(nick, version=2)
        peer.send(codec.AccountRequest("register", PASSWORD, ref="reg"))
        self.hasher.release()
        self.assertIn(codec.Done("register", nick, "reg"), peer.received())
        peer.send(codec.Quit())

    def guess(self, password: str, host: str, nick: str = "ann"):
        peer = self.server.peer(host)
        peer.send(codec.Login(nick, 2, password=password, ref="l"))
        return peer

    def test_guesses_sent_at_once_are_counted_as_they_start(self):
        """Bursts of 300 connections, each sending one wrong password before any
        hash ends: only the free guesses are ever checked, and the right
        password sent after them waits like any other."""
        for _ in range(3):
            peers = [self.guess(f"guess {i}", "203.0.113.1") for i in range(300)]
            self.assertLessEqual(len(self.hasher.queue), 2, "hashes for one account at once")
            refused = [p.received(flush=False) for p in peers]
            self.assertGreaterEqual(sum(1 for r in refused if r and r[0].code == ErrorCode.LOCKED_OUT), 298)
            self.hasher.release()
        self.assertEqual(self.hasher.ran, 1 + 3, "registering, then the three free guesses")
        right = self.guess(PASSWORD, "203.0.113.1")
        self.assertEqual(right.error().code, ErrorCode.LOCKED_OUT, "no way in by the burst")

    def test_hashes_in_flight_are_bounded_per_address_and_in_all(self):
        for i in range(10):
            self.register(f"user{i}")
        for i in range(10):
            self.guess("guess wrong", "203.0.113.7", f"user{i}")
        self.assertEqual(len(self.hasher.queue), 4, "four at once from one address")
        self.hasher.release()
        for i in range(40):
            self.guess("guess wrong", f"198.51.100.{i}", f"nobody{i}")
        self.assertEqual(len(self.hasher.queue), 32, "thirty-two at once in all")

    def test_a_closed_connection_drops_its_queued_hash(self):
        ran = self.hasher.ran
        peer = self.guess("guess wrong", "203.0.113.1")
        self.assertEqual(len(self.hasher.queue), 1)
        peer.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.hasher.queue, [], "nobody waits for that answer")
        self.hasher.release()
        self.assertEqual(self.hasher.ran, ran)

    def test_a_lock_out_elsewhere_does_not_lock_out_the_owner(self):
        owner = self.guess(PASSWORD, "198.51.100.7")  # the owner's laptop, once
        self.hasher.release()
        self.assertIsInstance(owner.received()[0], codec.Welcome)
        owner.send(codec.Quit())
        for _ in range(12):  # someone else keeps guessing: the account locks
            attacker = self.guess("guess", "203.0.113.1")
            self.hasher.release()
            self.server.clock.advance(attacker.error().retry_after or 0)
        self.guess("guess", "203.0.113.1")
        self.hasher.release()
        self.assertEqual(self.guess(PASSWORD, "192.0.2.5").error().code, ErrorCode.LOCKED_OUT)
        back = self.guess(PASSWORD, "198.51.100.7")
        self.hasher.release()
        self.assertIsInstance(back.received()[0], codec.Welcome, "the owner's address still gets in")


class TakenUpAgain(SynchronousTestCase):
    """A browser tab that reloads: its account's session ended without QUIT,
    and its last resume token opens it again for a while, once."""

    def setUp(self):
        self.server = Server()
        registered(self.server, "ann").send(codec.Quit())
        self.ann, packets = device(self.server, "ann")
        self.token = packets[0].resume

    def back(self, token):
        peer = self.server.peer()
        peer.send(codec.Login("ann", 2, token, ref="l"))
        return peer.received()[0]

    def test_within_the_grace_the_token_opens_the_account_once(self):
        self.ann.drop()  # the page reloads: its socket closes, no QUIT
        self.server.clock.advance(RESUME_GRACE - 1)
        welcome = self.back(self.token)
        self.assertIsInstance(welcome, codec.Welcome)
        self.assertTrue(welcome.account)
        self.assertNotEqual(welcome.resume, self.token)
        self.assertEqual(self.back(self.token).code, ErrorCode.NICK_REGISTERED, "the old token is spent")

    def test_not_after_the_grace_nor_after_quit_nor_with_another_token(self):
        self.ann.drop()
        self.assertEqual(self.back("not the token").code, ErrorCode.NICK_REGISTERED)
        self.server.clock.advance(RESUME_GRACE + 1)
        self.assertEqual(self.back(self.token).code, ErrorCode.NICK_REGISTERED, "the grace is over")
        again, packets = device(self.server, "ann")
        again.send(codec.Quit())  # ann left on purpose
        self.assertEqual(self.back(packets[0].resume).code, ErrorCode.NICK_REGISTERED)


class Devices(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.phone = registered(self.server, "ann")
        self.phone.send(codec.Join("general"))
        (self.bob,) = self.server.logged_in("bob", version=2)
        self.bob.join("general")
        self.server.flush()
        self.phone.received()
        self.desk, packets = device(self.server, "ann")
        self.welcome, self.room = packets
        self.phone.received()

    def test_presence_shows_the_account_once(self):
        self.assertEqual(self.welcome.id, self.phone.connection.session.id, "the same session")
        phone_token = token_text(self.phone.connection.session.devices[self.phone.connection])
        self.assertNotEqual(self.welcome.resume, phone_token)
        self.assertEqual(len(self.welcome.resume), len(phone_token))
        self.assertEqual(self.welcome.rooms, ["general"])
        self.assertEqual([m.nick for m in self.room.members], ["ann", "bob"])
        self.assertEqual(
            self.bob.received(),
            [
                codec.Pending(self.desk.connection.id, "connecting"),
                codec.Pending(self.desk.connection.id, "gone"),
            ],
            "no JOINED for a second device",
        )
        self.phone.drop()
        self.assertEqual(self.bob.received(), [], "no LEFT while a device remains")
        self.desk.send(codec.Quit("bye"))
        self.assertEqual(
            self.bob.received(),
            [codec.Left(self.welcome.id, "ann", "quit", "bye", "general")],
            "LEFT once, at the end",
        )

    def test_a_message_from_one_device_is_the_accounts_own_on_the_others(self):
        self.bob.received()
        self.desk.send(codec.Say("from my desk", "d1", room="general"))
        (own,) = self.desk.received()
        (other,) = self.phone.received()
        (seen,) = self.bob.received()
        self.assertEqual((own.sender, own.ref), ("ann", "d1"))
        self.assertEqual((other.sender, other.ref, other.text), ("ann", None, "from my desk"))
        self.assertEqual(seen, other)

    def test_whispers_reach_every_device_and_the_senders_others(self):
        self.bob.send(codec.Whisper("ann", "psst", "w"))
        self.assertEqual([p.text for p in self.phone.received()], ["psst"])
        self.assertEqual([p.text for p in self.desk.received()], ["psst"])
        self.phone.send(codec.Whisper("bob", "hi back", "w2"))
        self.assertEqual(self.phone.received()[0].ref, "w2")
        self.assertEqual(self.desk.received()[0].text, "hi back", "the sender's other device sees it too")

    def test_each_device_resumes_with_its_own_token(self):
        token = self.welcome.resume
        again = self.server.peer()
        welcome = again.login("ann", resume=token, version=2)
        self.assertEqual(welcome.id, self.welcome.id)
        self.assertIn(codec.Bye("replaced"), self.desk.received())
        self.assertFalse(self.phone.closing, "the other device is untouched")
        self.assertEqual(self.bob.received()[-1], codec.Pending(again.connection.id, "gone"))

    def test_part_on_one_device_takes_every_device_out(self):
        self.desk.send(codec.Part("general", ref="p"))
        self.assertEqual(self.desk.received()[-1].ref, "p")
        left = self.phone.received()[-1]
        self.assertEqual((left.reason, left.ref, left.room), ("part", None, "general"))


class InUse(SynchronousTestCase):
    """What a node answers when another node's login to the account of a
    session it holds asks whether the session is in use (docs/cluster.md)."""

    def setUp(self):
        self.server = Server()
        self.phone = registered(self.server, "ann")
        self.desk, _ = device(self.server, "ann")
        self.phone.received()
        self.desk.received()
        self.server.clock.advance(5)  # later than anything either said

    def asked(self):
        answers: list[bool] = []
        self.server.hub.inbound.in_use(nick_key("ann"), 1.5).addCallback(answers.append)
        return answers

    def test_a_session_nobody_answers_for_is_free(self):
        answers = self.asked()
        for peer in (self.phone, self.desk):
            self.assertIsInstance(peer.only(codec.ServerPing, flush=False), codec.ServerPing)
        self.server.clock.advance(1.4)
        self.assertEqual(answers, [], "not before the patience is spent")
        self.server.clock.advance(0.1)
        self.assertEqual(answers, [False])

    def test_one_device_that_answers_keeps_it(self):
        answers = self.asked()
        self.server.clock.advance(1.0)
        ping = self.desk.only(codec.ServerPing, flush=False)
        self.desk.send(codec.Pong(ping.token))
        self.server.clock.advance(0.5)
        self.assertEqual(answers, [True])

    def test_a_device_whose_reading_is_paused_counts_as_in_use(self):
        """Its answer may be waiting unread (its fair share paused it)."""
        answers = self.asked()
        self.desk.connection.pauseProducing()
        self.server.clock.advance(1.5)
        self.assertEqual(answers, [True])

    def test_a_device_that_answers_then_goes_does_not_count(self):
        answers = self.asked()
        self.desk.send(codec.Pong("x"))
        self.desk.drop()
        self.server.clock.advance(1.5)
        self.assertEqual(answers, [False], "the desk that answered is gone, the phone never did")
        self.phone.drop()
        answers = self.asked()
        self.assertEqual(answers, [False], "no session here: free at once")


class RememberedRooms(SynchronousTestCase):
    def test_an_account_is_back_in_its_rooms_with_unread_counts(self):
        server = Server()
        ann = registered(server, "ann")
        ann.send(codec.Join("lobby"))
        ann.send(codec.Join("general"))
        (bob,) = server.logged_in("bob", version=2)
        bob.join("lobby")
        ann.send(codec.Quit())
        server.flush()
        for i in range(3):
            bob.send(codec.Say(f"m{i}", room="lobby"))
        server.flush()
        _, packets = device(server, "ann")
        welcome, *rooms = packets
        self.assertEqual(welcome.rooms, ["lobby", "general"], "in the order joined")
        self.assertEqual([(r.room, r.unread) for r in rooms], [("lobby", 3), ("general", 0)])
        self.assertEqual(
            bob.received()[-1], codec.Joined(welcome.id, "ann", "lobby", op=True), "back in, as its operator"
        )

    def test_read_markers_move_forward_and_are_shared_across_devices(self):
        server = Server()
        phone = registered(server, "ann")
        phone.send(codec.Join("lobby"))
        desk, _ = device(server, "ann")
        phone.received()
        for i in range(4):
            phone.send(codec.Say(f"m{i}", room="lobby"))
        server.flush()
        phone.received()
        desk.received()
        phone.send(codec.Mark("lobby", 3, "m"))
        self.assertEqual(phone.only(codec.Marked, flush=False), codec.Marked("lobby", 3, 1, "m"))
        self.assertEqual(desk.only(codec.Marked, flush=False), codec.Marked("lobby", 3, 1))
        desk.send(codec.Mark("lobby", 1))
        self.assertEqual(desk.only(codec.Marked, flush=False).seq, 3, "never backwards")
        desk.send(codec.Mark("lobby", 99))
        self.assertEqual(
            desk.only(codec.Marked, flush=False), codec.Marked("lobby", 4, 0), "no further than the last"
        )
        phone.send(codec.Quit())
        desk.send(codec.Quit())
        _, (_, room) = device(server, "ann")
        self.assertEqual((room.read, room.unread), (4, 0), "kept across logins")
        self.assertEqual(result(server.hub.store.memberships(nick_key("ann")))[0].read, 4)

    def test_part_forgets_the_room(self):
        server = Server()
        ann = registered(server, "ann")
        ann.send(codec.Join("lobby"))
        ann.send(codec.Part("lobby"))
        ann.send(codec.Quit())
        _, packets = device(server, "ann")
        self.assertEqual(packets[0].rooms, [])
