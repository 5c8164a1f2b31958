"""Files in the core (docs/protocol.md 20) on StringTransport and
task.Clock: FILES and its tokens, SAY with files and its refusals, what
version 1 and IRC see, DELETE taking the files with it, the expiry of
uploads never attached, and quotas. The bytes are in a real folder
(DiskFileStore, on the reactor's threads), the records in the history's
SQLite file."""

from __future__ import annotations

import hashlib
import os

from twisted.internet import defer, reactor
from twisted.python.usage import UsageError
from twisted.trial.unittest import TestCase

from chatproto import codec
from chatproto.backends.disk_files import DiskFileStore
from chatproto.backends.sqlite import SQLiteLog
from chatproto.backends.sqlite_files import SQLiteFileRecords
from chatproto.codec import ErrorCode
from chatproto.core.files import FileSpace, is_open
from tests.harness import Server
from tests.test_irc import IrcPeer
from tests.waiting import until

URL = "http://chat.test"


class FilesTestCase(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def make(self, **limits):
        """A server with files, its secret read; ``self.server``."""
        log = SQLiteLog(":memory:")
        folder = self.mktemp()
        os.makedirs(folder)
        self.store = DiskFileStore(os.path.join(folder, "blobs"), reactor)
        self.records = SQLiteFileRecords(log)
        space = FileSpace(self.store, self.records, URL, temp=folder)
        self.server = Server(store=log, files=space, **limits)
        self.files = self.server.hub.files
        self.addCleanup(self.files.stop)
        yield self.files.start()
        self.assertTrue(self.files.ready)
        self.folder = folder
        return self.server

    def v2(self, nick: str, *rooms: str):
        """A version 2 session in general and ``rooms``; every peer's inbox emptied."""
        peer = self.server.peer()
        peer.login(nick, version=2)
        for room in ("general", *rooms):
            peer.join(room)
        self.peers = [*getattr(self, "peers", []), peer]
        for each in self.peers:
            each.received()
        return peer

    @defer.inlineCallbacks
    def upload(self, peer, room: str = "general", data: bytes = b"hello\n", name: str = "a.txt"):
        """An upload of ``peer``'s session, as POST /files keeps it."""
        path = os.path.join(self.folder, f"up-{len(data)}-{name}")
        with open(path, "wb") as f:
            f.write(data)
        session = peer.connection.session
        target = self.server.hub.directory.find(room)
        digest = hashlib.sha256(data).hexdigest()
        owner = self.files.owner_of(session)
        record = yield self.files.keep(owner, target.key, name, "text/plain", digest, len(data), path)
        return record

    def holder(self, token: str):
        """The session a token names, as an upload's first check finds it."""
        found = self.successResultOf(self.files.uploader(token))
        return None if found is None else found.session

    def readable(self, record, token, sig) -> bool:
        return self.successResultOf(self.files.readable(record, token, sig))


class Tokens(FilesTestCase):
    @defer.inlineCallbacks
    def test_files_gives_a_token_that_names_the_session(self):
        yield self.make()
        ann = self.v2("ann")
        ann.send(codec.Files("r1"))
        token = ann.only(codec.FilesToken, flush=False)
        self.assertLess(len(token.token), 100)
        self.assertEqual((token.url, token.max_upload, token.ref), (URL + "/files", 10 * 1024 * 1024, "r1"))
        self.assertEqual(token.expires, 600.0)
        self.assertIs(self.holder(token.token), ann.connection.session)
        ann.send(codec.Files())
        again = ann.only(codec.FilesToken, flush=False)
        self.assertNotEqual(again.token, token.token)  # a new one; the first still works
        self.server.clock.advance(1)
        self.assertIs(self.holder(token.token), ann.connection.session)

    @defer.inlineCallbacks
    def test_a_token_expires_ends_with_its_session_and_cannot_be_forged(self):
        yield self.make(file_token_ttl=30)
        ann, bob = self.v2("ann"), self.v2("bob")
        ann.send(codec.Files())
        token = ann.only(codec.FilesToken, flush=False).token
        bob.send(codec.Files())
        bobs = bob.only(codec.FilesToken, flush=False).token
        forged = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
        self.assertIsNone(self.holder(forged))
        self.assertIsNone(self.holder("x" * 43))
        self.assertIsNone(self.holder(""))
        self.server.clock.advance(29)
        self.assertIsNotNone(self.holder(token))
        bob.send(codec.Quit())
        self.assertIsNone(self.holder(bobs))
        self.server.clock.advance(1)
        self.assertIsNone(self.holder(token))

    @defer.inlineCallbacks
    def test_version_1_has_no_files_and_a_server_without_files_says_so(self):
        yield self.make()
        old = self.server.peer()
        old.login("old", version=1)
        old.received()
        old.send(codec.Files("r"))
        self.assertEqual(old.error().code, ErrorCode.UNKNOWN_TYPE)
        plain = Server()
        peer = plain.peer()
        peer.login("ann", version=2)
        peer.received()
        peer.send(codec.Files("r"))
        error = peer.error()
        self.assertEqual((error.code, error.ref), (ErrorCode.NO_FILES, "r"))

    @defer.inlineCallbacks
    def test_files_is_rate_limited_with_say(self):
        yield self.make(rate=0.001, burst=1)
        ann = self.v2("ann")
        ann.send(codec.Files())
        ann.only(codec.FilesToken, flush=False)
        ann.send(codec.Files())
        self.assertEqual(ann.error().code, ErrorCode.RATE_LIMITED)


class Saying(FilesTestCase):
    @defer.inlineCallbacks
    def test_a_message_with_files_reaches_every_version(self):
        yield self.make()
        ann = self.v2("ann")
        old = self.server.peer()
        old.login("old", version=1)
        ann.received()
        old.received()
        one = yield self.upload(ann, data=b"x" * 2048, name="log.txt")
        two = yield self.upload(ann, data=b"y" * 10, name="b c.txt")
        ann.send(codec.Say("see", "r", "general", files=[one.id, two.id]))
        mine = ann.only(codec.MessagePacket)
        self.assertEqual([f.id for f in mine.files], [one.id, two.id])
        self.assertEqual(mine.files[0], codec.File(one.id, "log.txt", 2048, "text/plain"))
        self.assertEqual(mine.ref, "r")
        seen = old.only(codec.MessagePacket)
        self.assertIsNone(seen.files)
        self.assertEqual(
            seen.text,
            f"see\n[log.txt, 2 KB] {URL}/files/{one.id}/log.txt"
            f"\n[b c.txt, 10 bytes] {URL}/files/{two.id}/b%20c.txt",
        )
        (stored,) = self.server.stored()
        self.assertEqual(stored.files, mine.files)
        attached = yield self.records.get(one.id)
        self.assertEqual(attached.seq, stored.seq)
        # a newcomer's ROOM and a HISTORY page carry them too
        cat = self.server.peer()
        cat.login("cat", version=2)
        room = cat.join("general")
        self.assertEqual(room.history[-1].files, mine.files)
        cat.send(codec.HistoryRequest(room="general"))
        page = cat.only(codec.HistoryPage)
        self.assertEqual(page.messages[-1].files, mine.files)
        old.received()
        old.send(codec.HistoryRequest())
        self.assertEqual(old.only(codec.HistoryPage).messages[-1].text, seen.text)

    @defer.inlineCallbacks
    def test_with_files_the_text_may_be_empty(self):
        yield self.make()
        ann = self.v2("ann")
        one = yield self.upload(ann)
        ann.send(codec.Say("", room="general", files=[one.id]))
        self.assertEqual(ann.only(codec.MessagePacket).text, "")
        ann.send(codec.Say("", room="general"))
        self.assertEqual(ann.error().code, ErrorCode.BAD_TEXT)

    @defer.inlineCallbacks
    def test_bad_file(self):
        yield self.make(max_files=2)
        ann, bob = self.v2("ann", "other"), self.v2("bob", "other")
        mine = yield self.upload(ann)
        elsewhere = yield self.upload(ann, "other")
        bobs = yield self.upload(bob)
        extra = []
        for i in range(2):
            extra.append((yield self.upload(ann, data=bytes([i]) * 3)))
        cases = [
            ["nosuchfile"],
            [bobs.id],  # someone else's
            [elsewhere.id],  # another room's
            [mine.id, mine.id],  # the same twice
            [mine.id, *[e.id for e in extra]],  # more than max_files
        ]
        for ids in cases:
            ann.send(codec.Say("x", "r", "general", files=ids))
            error = ann.error()
            self.assertEqual((error.code, error.ref), (ErrorCode.BAD_FILE, "r"), ids)
        ann.send(codec.Say("x", room="general", files=[mine.id]))
        ann.only(codec.MessagePacket)
        ann.send(codec.Say("again", room="general", files=[mine.id]))  # attached already
        self.assertEqual(ann.error().code, ErrorCode.BAD_FILE)
        # the checks of SAY come first
        ann.send(codec.Say("x", room="nowhere", files=["nosuchfile"]))
        self.assertEqual(ann.error().code, ErrorCode.NO_SUCH_ROOM)
        self.assertEqual(len(self.server.stored()), 1)

    @defer.inlineCallbacks
    def test_an_account_attaches_on_another_device(self):
        yield self.make()
        ann = self.v2("ann")
        ann.send(codec.AccountRequest("register", password="correct horse battery"))
        ann.received()
        other = self.server.peer()
        other.login("ann", version=2, password="correct horse battery")
        other.received()
        mine = yield self.upload(ann)
        other.send(codec.Say("from my phone", room="general", files=[mine.id]))
        self.assertEqual(other.only(codec.MessagePacket).files[0].id, mine.id)


class Removing(FilesTestCase):
    @defer.inlineCallbacks
    def test_deleting_a_message_deletes_its_files_then_their_bytes(self):
        yield self.make()
        ann = self.v2("ann")
        one = yield self.upload(ann, data=b"shared bytes")
        kept = yield self.upload(ann, data=b"shared bytes", name="copy.txt")  # the same blob
        ann.send(codec.Say("one", room="general", files=[one.id]))
        seq = ann.only(codec.MessagePacket).seq
        ann.send(codec.Delete("general", seq))
        changed = ann.only(codec.Changed)
        self.assertIsNone(changed.message.files)
        self.assertIsNone((yield self.records.get(one.id)))
        self.assertIsNotNone((yield self.store.size(one.digest)))  # still named by the copy
        self.assertIsNone(self.server.stored()[0].files)
        yield self.files.forget([kept.id])
        self.assertIsNone((yield self.store.size(one.digest)))

    @defer.inlineCallbacks
    def test_a_deleted_messages_only_blob_goes(self):
        yield self.make()
        ann = self.v2("ann")
        one = yield self.upload(ann, data=b"alone")
        ann.send(codec.Say("one", room="general", files=[one.id]))
        seq = ann.only(codec.MessagePacket).seq
        ann.send(codec.Delete("general", seq))
        ann.received()
        sizes = []

        def gone():
            self.store.size(one.digest).addCallback(sizes.append)
            return sizes and sizes[-1] is None

        yield until(gone)

    @defer.inlineCallbacks
    def test_uploads_never_attached_go_after_upload_keep(self):
        yield self.make(upload_keep=120, ping_interval=1000, idle_timeout=2000)
        ann = self.v2("ann")
        old = yield self.upload(ann)
        attached = yield self.upload(ann, data=b"kept")
        ann.send(codec.Say("kept", room="general", files=[attached.id]))
        ann.received()
        self.server.clock.advance(60)
        young = yield self.upload(ann, data=b"young")
        for _ in range(2):  # a sweep every 60 s: the first upload is 120 s old at the second
            self.server.clock.advance(60)
        self.assertIsNone((yield self.records.get(old.id)))
        self.assertIsNotNone((yield self.records.get(young.id)))
        self.assertIsNotNone((yield self.records.get(attached.id)))
        ann.send(codec.Say("late", room="general", files=[old.id]))
        self.assertEqual(ann.error().code, ErrorCode.BAD_FILE)


class Quotas(FilesTestCase):
    @defer.inlineCallbacks
    def test_the_account_quota_and_the_servers(self):
        yield self.make(account_quota=100, files_quota=150)
        ann, bob = self.v2("ann"), self.v2("bob")
        session = self.files.owner_of(ann.connection.session)
        self.assertIsNone((yield self.files.quota_refusal(session, 100)))
        yield self.upload(ann, data=b"a" * 60)
        self.assertIn("more than 100 bytes", (yield self.files.quota_refusal(session, 41)))
        self.assertIsNone((yield self.files.quota_refusal(session, 40)))
        yield self.upload(bob, data=b"b" * 60)
        refusal = yield self.files.quota_refusal(self.files.owner_of(bob.connection.session), 31)
        self.assertIn("quota is reached", refusal)

    @defer.inlineCallbacks
    def test_a_quota_refuses_at_its_limit_and_a_deletion_frees_it(self):
        yield self.make(account_quota=100, files_quota=1000)
        ann = self.v2("ann")
        owner = self.files.owner_of(ann.connection.session)
        first = yield self.upload(ann, data=b"a" * 50, name="a.txt")
        yield self.upload(ann, data=b"b" * 50, name="b.txt")
        self.assertIsNotNone((yield self.files.quota_refusal(owner, 1)), "exactly at the limit")
        self.assertIsNone((yield self.files.quota_refusal(owner, 0)))
        yield self.records.remove([first.id])
        self.assertIsNone((yield self.files.quota_refusal(owner, 50)), "freed by the deletion")
        self.assertIsNotNone((yield self.files.quota_refusal(owner, 51)))

    @defer.inlineCallbacks
    def test_uploads_at_once(self):
        yield self.make(uploads_at_once=2)
        session = self.v2("ann").connection.session
        self.assertTrue(self.files.begin_upload(session.id))
        self.assertTrue(self.files.begin_upload(session.id))
        self.assertFalse(self.files.begin_upload(session.id))
        self.files.end_upload(session.id)
        self.assertTrue(self.files.begin_upload(session.id))


class Irc(FilesTestCase):
    @defer.inlineCallbacks
    def test_irc_gets_links_signed_where_the_room_is_not_open(self):
        yield self.make()
        irc = IrcPeer(self.server)
        irc.register("ircy")
        irc.send("JOIN #secret", "MODE #secret +k pw", "JOIN #general")
        irc.lines()
        ann = self.v2("ann")
        ann.send(codec.Join("secret", key="pw"))
        ann.received()
        self.assertFalse(is_open(self.server.hub.room_for("secret")))
        hidden = yield self.upload(ann, "secret", b"psst", "plan.txt")
        public = yield self.upload(ann, "general", b"hi", "hi.txt")
        ann.send(codec.Say("plan", room="secret", files=[hidden.id]))
        ann.send(codec.Say("hi", room="general", files=[public.id]))
        lines = [text for text in irc.lines() if "PRIVMSG" in text]
        self.assertEqual(len(lines), 4, lines)
        self.assertTrue(lines[0].endswith(":plan"), lines)
        self.assertIn(f"[plan.txt, 4 bytes] {URL}/files/{hidden.id}/plan.txt?sig=", lines[1])
        sig = lines[1].split("?sig=")[1]
        self.assertTrue(self.readable(hidden, None, sig))
        self.assertFalse(self.readable(hidden, None, sig[:-2]))  # a signature changed
        self.assertTrue(lines[3].endswith(f":[hi.txt, 2 bytes] {URL}/files/{public.id}/hi.txt"), lines)
        # the link works while its session is a member, and not after
        irc.send("PART #secret")
        irc.lines()
        self.assertFalse(self.readable(hidden, None, sig))

    @defer.inlineCallbacks
    def test_who_may_read(self):
        yield self.make()
        ann = self.v2("ann", "secret")
        ann.send(codec.Moderate("secret", "mode", invite_only=True))
        bob = self.v2("bob")
        hidden = yield self.upload(ann, "secret")
        public = yield self.upload(ann, "general")
        ann.send(codec.Files())
        token = ann.only(codec.FilesToken).token
        bob.send(codec.Files())
        bobs = bob.only(codec.FilesToken).token
        self.assertTrue(self.readable(public, None, None))
        self.assertFalse(self.readable(hidden, None, None))
        self.assertFalse(self.readable(hidden, bobs, None))
        self.assertTrue(self.readable(hidden, token, None))


class HttpOnClock(FilesTestCase):
    """The ``--web`` site's /files over StringTransport, its time on task.Clock."""

    def http(self, request: bytes):
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        from chatproto.transports.web import web_site

        address = IPv4Address("TCP", "127.0.0.1", 50000)
        channel = web_site(self.server.hub).buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        channel.makeConnection(transport)
        channel.dataReceived(request)
        return transport

    def post(self, token: str, body: bytes = b"abc") -> bytes:
        return (
            b"POST /files?room=general&name=a.txt HTTP/1.1\r\nHost: chat.test\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )

    @defer.inlineCallbacks
    def test_an_upload_with_a_token_that_expired_is_401(self):
        yield self.make(file_token_ttl=60, ping_interval=1000, idle_timeout=2000)
        ann = self.v2("ann")
        ann.send(codec.Files())
        token = ann.only(codec.FilesToken, flush=False).token
        self.server.clock.advance(59)
        accepted = self.http(self.post(token))
        yield until(lambda: b"\r\n\r\n" in accepted.value())
        self.assertTrue(accepted.value().startswith(b"HTTP/1.1 201 "), accepted.value())
        self.server.clock.advance(1)
        refused = self.http(self.post(token))
        self.assertTrue(refused.value().startswith(b"HTTP/1.1 401 "), refused.value())
        self.assertIn(b'"error":"bad_token"', refused.value())
        self.assertTrue(refused.disconnecting)
        self.assertEqual((yield self.records.used_by_all()), 3)


class Options(TestCase):
    def test_files_options(self):
        from chatproto.tap import Options as ServerOptions

        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        history = os.path.join(folder, "chat.sqlite3")
        options = ServerOptions()
        options.parseOptions(["--history", history, "--public-url", "https://chat.example"])
        self.assertEqual(
            (options["files"], options["public-url"]), (os.path.join(folder, "files"), "https://chat.example")
        )
        off = ServerOptions()
        off.parseOptions(["--history", history, "--files", "off"])
        self.assertIsNone(off["files"])
        memory = ServerOptions()
        memory.parseOptions(["--history", ":memory:", "--max-upload", "1024"])
        self.assertIsNone(memory["files"])
        self.assertEqual(memory["limits"].max_upload, 1024)
        bucket = ServerOptions()
        bucket.parseOptions(["--cluster", "redis://127.0.0.1:6379", "--files", "s3://chat-files/up"])
        self.assertEqual(bucket["files"], "s3://chat-files/up")
        for wrong in (["--cluster", "redis://127.0.0.1:6379", "--files", folder], ["--files", "s3://"]):
            with self.assertRaises(UsageError):
                ServerOptions().parseOptions(["--history", history, *wrong])


class StoreRefused(TestCase):
    @defer.inlineCallbacks
    def test_a_store_that_cant_be_written_leaves_files_off(self):
        blocked = os.path.abspath(self.mktemp())
        with open(blocked, "w") as f:
            f.write("a file where the folder should be")
        log = SQLiteLog(":memory:")
        space = FileSpace(DiskFileStore(os.path.join(blocked, "files"), reactor), SQLiteFileRecords(log), URL)
        server = Server(store=log, files=space)
        yield server.hub.files.start()
        self.assertFalse(server.hub.files.ready)
        self.assertEqual(len(self.flushLoggedErrors()), 0)  # said in one line, not a traceback
        peer = server.peer()
        peer.login("ann", version=2)
        peer.received()
        peer.send(codec.Files())
        self.assertEqual(peer.error().code, ErrorCode.NO_FILES)


class Welcome(TestCase):
    def test_version_2_is_told_the_file_limits_and_version_1_is_not(self):
        server = Server(max_upload=5000, max_files=3)
        new, old = server.peer(), server.peer()
        limits = new.login("new", version=2).limits
        self.assertEqual((limits["max_upload"], limits["max_files"]), (5000, 3))
        self.assertNotIn("max_upload", old.login("old", version=1).limits)

    def test_links_start_with_the_web_endpoints_address(self):
        import socket

        from chatproto.server import endpoint_url

        self.assertEqual(endpoint_url("tcp:8080:interface=127.0.0.1"), "http://127.0.0.1:8080")
        self.assertEqual(endpoint_url("tcp:80:interface=\\:\\:1"), "http://[::1]")
        here = socket.getfqdn()
        self.assertEqual(endpoint_url("ssl:8443:privateKey=k.pem:certKey=c.pem"), f"https://{here}:8443")
        self.assertEqual(endpoint_url("ssl:443:privateKey=k.pem"), f"https://{here}")
        self.assertEqual(
            endpoint_url("tcp:0:interface=127.0.0.1"), "", "a port chosen at listening: no address"
        )
