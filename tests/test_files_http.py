"""Files over HTTP (docs/protocol.md 20.3, 20.4) on real sockets on
127.0.0.1, with twisted.web.client.Agent and raw connections: uploads with
a Content-Length and chunked, refusals before the body is read, who may
download what, images and the files that pretend to be something else,
Range."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib

from PIL import Image
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.python.threadpool import ThreadPool
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from chatproto import codec, thumbnails
from chatproto.backends.disk_files import DiskFileStore
from chatproto.backends.sqlite import SQLiteLog
from chatproto.backends.sqlite_files import SQLiteFileRecords
from chatproto.core.files import FileSpace
from chatproto.limits import Limits
from chatproto.server import build_server
from tests.netclient import RawClient, connect
from tests.test_integration import LiveTestCase
from tests.waiting import until


def png(width: int, height: int) -> bytes:
    image = Image.new("RGB", (width, height), (200, 30, 30))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares a huge picture."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg_with_gps() -> bytes:
    """A 40 by 20 JPEG, turned (EXIF orientation 6: shown 20 by 40), with a GPS block."""
    image = Image.new("RGB", (40, 20), (10, 120, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 to show
    exif[0x010F] = "camera"  # make: kept
    exif[thumbnails.GPS_TAG] = {1: "N", 2: (52.0, 22.0, 1.0)}
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def turned_photo(width: int = 3200, height: int = 1600) -> bytes:
    """A large JPEG stored on its side (EXIF orientation 6: shown ``height``
    by ``width``), large enough for the decoder to reduce its scale."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


@implementer(IBodyProducer)
class Chunked:
    """A body of unknown length: the Agent sends it chunked."""

    length = UNKNOWN_LENGTH

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def startProducing(self, consumer):
        for piece in self.pieces:
            consumer.write(piece)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class FilesOverHttp(LiveTestCase):
    def serve_files(self, files=None, cluster=None, **limits):
        """A server with files (in a folder of its own, unless ``files``
        says where), on 127.0.0.1; the latest is ``self.server``. Its
        clients are taken once its files are ready: nothing to wait for."""
        folder = self.mktemp()
        os.makedirs(folder)
        self.folder = os.path.abspath(folder)
        server = build_server(
            reactor,
            ["tcp:0:interface=127.0.0.1"],
            os.path.join(folder, "chat.sqlite3"),
            Limits(**limits),
            web=["tcp:0:interface=127.0.0.1"],
            files=files or os.path.join(folder, "files"),
            public_url="http://chat.test",
            cluster=cluster,
        )
        server.start()
        self.server, self.hub, self.port, self.web_port = server, server.hub, server.port, server.web_port
        if not hasattr(self, "clients"):
            self.clients = []
            self.addCleanup(self._clients_gone)
        self.addCleanup(self._stop, server)
        return defer.succeed(server)

    @defer.inlineCallbacks
    def member(self, nick: str, *rooms: str):
        """A version 2 client in general and ``rooms``, and its upload token."""
        client = yield self.client(nick, version=2)
        for room in ("general", *rooms):
            client.send(codec.Join(room))
            yield client.expect(codec.RoomState)
        client.send(codec.Files("t"))
        token = yield client.expect(codec.FilesToken)
        return client, token.token

    def request(self, method: bytes, path: str, token: str | None = None, body=None, headers=None):
        given = {k.encode(): [v.encode()] for k, v in (headers or {}).items()}
        if token is not None:
            given[b"authorization"] = [f"Bearer {token}".encode()]
        if isinstance(body, bytes):
            body = FileBodyProducer(io.BytesIO(body))
        url = f"http://127.0.0.1:{self.web_port}{path}".encode()
        return Agent(reactor).request(method, url, Headers(given), body)

    @defer.inlineCallbacks
    def upload(self, token, data, room="general", name="a.txt", kind="text/plain", status=201):
        response = yield self.request(
            b"POST", f"/files?room={room}&name={name}", token, data, {"content-type": kind}
        )
        body = json.loads((yield readBody(response)))
        self.assertEqual(response.code, status, body)
        return body

    @defer.inlineCallbacks
    def get(self, path, token=None, headers=None):
        response = yield self.request(b"GET", path, token, headers=headers)
        body = yield readBody(response)
        return response, body

    def header(self, response, name: str) -> str | None:
        values = response.headers.getRawHeaders(name)
        return values[0] if values else None

    @defer.inlineCallbacks
    def raw(self, data: bytes) -> defer.Deferred:
        """Bytes sent on a connection of its own; what came back once it closed."""
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.web_port), RawClient())
        client.transport.write(data)
        yield client.lost.addTimeout(10, reactor)
        return client.received

    def leftovers(self) -> list[str]:
        """Files of uploads under way left in the temporary folder."""
        import tempfile

        return [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("upload-")]


class StartingUp(LiveTestCase):
    @defer.inlineCallbacks
    def test_no_connection_is_taken_before_files_are_ready(self):
        """The file store's disk answers late at start (its threads are not
        running yet): the first client waits in the listen backlog until the
        signing secret is read, and its FILES gets a token, never no_files."""
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        disk = ThreadPool(1, 1, "slow disk")
        self.addCleanup(disk.stop)
        history = SQLiteLog(":memory:")
        store = DiskFileStore(os.path.join(folder, "files"), reactor, disk)
        space = FileSpace(store, SQLiteFileRecords(history), "http://chat.test", temp=folder)
        server = build_server(reactor, ["tcp:0:interface=127.0.0.1"], history, files=space)
        server.start()
        self.clients = []
        self.addCleanup(self._clients_gone)
        self.addCleanup(self._stop, server)
        connecting = connect(reactor, server.port, "ann", version=2)
        (listener,) = server.listeners
        self.assertNotIn(listener.port, reactor.getReaders(), "accepting before files are ready")
        disk.start()
        ann = yield connecting
        self.clients.append(ann)
        self.assertTrue(server.hub.files.ready)
        ann.send(codec.Files("f"))
        answer = yield ann.expect((codec.FilesToken, codec.Error))
        self.assertIsInstance(answer, codec.FilesToken)


class Uploading(FilesOverHttp):
    @defer.inlineCallbacks
    def test_upload_with_a_length_then_download(self):
        yield self.serve_files()
        _, token = yield self.member("ann")
        data = b"line one\nline two\n"
        found = yield self.upload(token, data, name="notes.txt")
        self.assertEqual(
            {k: v for k, v in found.items() if k != "id"},
            {"name": "notes.txt", "size": len(data), "type": "text/plain"},
        )
        self.assertEqual(len(found["id"]), 22)
        response, body = yield self.get(f"/files/{found['id']}/whatever.txt")
        self.assertEqual((response.code, body), (200, data))
        self.assertEqual(self.header(response, "x-content-type-options"), "nosniff")
        self.assertEqual(self.header(response, "content-security-policy"), "default-src 'none'; sandbox")
        self.assertEqual(self.header(response, "cache-control"), "private")
        self.assertEqual(self.header(response, "content-type"), "text/plain; charset=utf-8")
        self.assertEqual(
            self.header(response, "content-disposition"), "attachment; filename*=UTF-8''notes.txt"
        )
        self.assertIsNotNone(self.header(response, "etag"))

    @defer.inlineCallbacks
    def test_a_chunked_upload(self):
        yield self.serve_files()
        _, token = yield self.member("ann")
        pieces = [b"x" * 1000, b"y" * 5000, b"z"]
        response = yield self.request(b"POST", "/files?room=general&name=c.bin", token, Chunked(pieces))
        found = json.loads((yield readBody(response)))
        self.assertEqual(
            (response.code, found["size"], found["type"]), (201, 6001, "application/octet-stream")
        )
        _, body = yield self.get(f"/files/{found['id']}/c.bin")
        self.assertEqual(body, b"".join(pieces))

    @defer.inlineCallbacks
    def test_too_large_is_refused_before_its_body_is_read(self):
        yield self.serve_files(max_upload=1000)
        _, token = yield self.member("ann")
        # Headers only: the body is never sent, and the answer comes anyway.
        answer = yield self.raw(
            b"POST /files?room=general&name=big HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 1001\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertEqual(json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"], "too_large")
        # a client that waits for "100 Continue" is told 413 instead, and nothing more
        answer = yield self.raw(
            b"POST /files?room=general&name=big HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 5000\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertNotIn(b"100 Continue", answer)
        # chunked: refused as it grows past the limit, nothing kept
        answer = yield self.raw(
            b"POST /files?room=general&name=big HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3e8\r\n" + b"a" * 1000 + b"\r\n1\r\nb\r\n0\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertEqual((yield self.hub.files.records.used_by_all()), 0)
        self.assertEqual(self.leftovers(), [])
        yield self.upload(token, b"a" * 1000)  # exactly the limit is fine

    @defer.inlineCallbacks
    def test_tokens_rooms_and_names(self):
        yield self.serve_files()
        _, token = yield self.member("ann")
        body = yield self.upload(None, b"x", status=401)
        self.assertEqual(body["error"], "bad_token")
        body = yield self.upload("A" * 43, b"x", status=401)
        self.assertEqual(body["error"], "bad_token")
        body = yield self.upload(token, b"x", room="nowhere", status=404)
        self.assertEqual(body["error"], "no_such_room")
        yield self.member("bob", "elsewhere")
        body = yield self.upload(token, b"x", room="elsewhere", status=403)
        self.assertEqual(body["error"], "not_a_member")
        body = yield self.upload(token, b"x", name="", status=400)
        self.assertEqual(body["error"], "bad_request")
        found = yield self.upload(token, b"x", name="..%2F..%2Fetc%2Fpasswd%01")
        self.assertEqual(found["name"], "etcpasswd")

    @defer.inlineCallbacks
    def test_uploads_at_once(self):
        yield self.serve_files(uploads_at_once=2)
        _, token = yield self.member("ann")
        session = self.hub.session_for("ann")
        slow = []
        for _ in range(2):  # two uploads that have sent half their body, and wait
            where = TCP4ClientEndpoint(reactor, "127.0.0.1", self.web_port)
            client = yield connectProtocol(where, RawClient())
            client.transport.write(
                b"POST /files?room=general&name=slow HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 100\r\n\r\n" + b"x" * 50
            )
            slow.append(client)
        yield until(lambda: self.hub.files.under_way(session) == 2)
        body = yield self.upload(token, b"third", status=429)
        self.assertEqual(body["error"], "rate_limited")
        slow[0].transport.write(b"y" * 50)  # one finishes: room for another
        yield until(lambda: b"201 Created" in slow[0].received)
        yield self.upload(token, b"now")
        slow[1].transport.loseConnection()  # one gives up: nothing of it kept
        yield slow[1].lost
        yield until(lambda: self.hub.files.under_way(session) == 0)
        self.assertEqual(self.leftovers(), [])
        slow[0].transport.loseConnection()
        yield slow[0].lost

    @defer.inlineCallbacks
    def test_the_account_quota(self):
        yield self.serve_files(account_quota=1500)
        _, token = yield self.member("ann")
        yield self.upload(token, b"a" * 1000)
        body = yield self.upload(token, b"b" * 1000, status=507)
        self.assertEqual(body["error"], "quota_exceeded")
        body = yield self.upload(token, Chunked([b"c" * 600]), status=507)
        self.assertEqual(body["error"], "quota_exceeded")
        self.assertEqual(self.leftovers(), [])


class Reading(FilesOverHttp):
    @defer.inlineCallbacks
    def test_a_private_rooms_file_needs_a_members_token(self):
        yield self.serve_files()
        ann, token = yield self.member("ann", "secret")
        ann.send(codec.Moderate("secret", "mode", invite_only=True))
        yield ann.expect(codec.MessagePacket)
        _, bobs = yield self.member("bob")
        found = yield self.upload(token, b"the plan", room="secret", name="plan.txt")
        path = f"/files/{found['id']}/plan.txt"
        nobody, body = yield self.get(path)
        stranger, _ = yield self.get(path, bobs)
        unknown, unknown_body = yield self.get(f"/files/{'A' * 22}/plan.txt")
        self.assertEqual((nobody.code, stranger.code, unknown.code), (404, 404, 404))
        self.assertEqual(body, unknown_body)  # one answer: guessing ids tells nothing
        member, body = yield self.get(path, token)
        self.assertEqual((member.code, body), (200, b"the plan"))
        by_query, body = yield self.get(f"{path}?token={token}")
        self.assertEqual((by_query.code, body), (200, b"the plan"))

    @defer.inlineCallbacks
    def test_a_deleted_messages_files_are_gone_at_once(self):
        yield self.serve_files()
        ann, token = yield self.member("ann")
        found = yield self.upload(token, b"soon gone")
        ann.send(codec.Say("here", room="general", files=[found["id"]]))
        said = yield ann.expect(codec.MessagePacket)
        self.assertEqual(said.files[0].id, found["id"])
        ann.send(codec.Delete("general", said.seq))
        yield ann.expect(codec.Changed)
        response, _ = yield self.get(f"/files/{found['id']}/a.txt")
        self.assertEqual(response.code, 404)

    @defer.inlineCallbacks
    def test_a_file_of_several_pieces_comes_whole(self):
        yield self.serve_files()
        _, token = yield self.member("ann")
        data = os.urandom(3 * 1024 * 1024 + 5)  # more than three of the store's pieces
        found = yield self.upload(token, data, name="big.bin", kind="application/x-thing")
        self.assertEqual((found["size"], found["type"]), (len(data), "application/x-thing"))
        response, body = yield self.get(f"/files/{found['id']}/big.bin")
        self.assertEqual(response.length, len(data))
        self.assertTrue(body == data, "the same bytes")
        across = {"range": "bytes=1048570-1048580"}  # the end of one piece, the start of the next
        response, body = yield self.get(f"/files/{found['id']}/big.bin", headers=across)
        self.assertEqual((response.code, body), (206, data[1048570:1048581]))

    @defer.inlineCallbacks
    def test_range(self):
        yield self.serve_files()
        _, token = yield self.member("ann")
        found = yield self.upload(token, b"0123456789")
        path = f"/files/{found['id']}/a.txt"
        response, body = yield self.get(path, headers={"range": "bytes=2-5"})
        self.assertEqual((response.code, body), (206, b"2345"))
        self.assertEqual(self.header(response, "content-range"), "bytes 2-5/10")
        response, body = yield self.get(path, headers={"range": "bytes=-3"})
        self.assertEqual((response.code, body), (206, b"789"))
        response, body = yield self.get(path, headers={"range": "bytes=7-"})
        self.assertEqual((response.code, body), (206, b"789"))
        response, _ = yield self.get(path, headers={"range": "bytes=10-20"})
        self.assertEqual((response.code, self.header(response, "content-range")), (416, "bytes */10"))


class Images(FilesOverHttp):
    @defer.inlineCallbacks
    def test_an_image_gets_its_size_and_a_thumbnail(self):
        yield self.serve_files()
        _, token = yield self.member("ann")
        found = yield self.upload(token, png(640, 480), name="shot.png", kind="application/octet-stream")
        self.assertEqual(
            (found["type"], found["width"], found["height"], found["thumb"]), ("image/png", 640, 480, True)
        )
        response, body = yield self.get(f"/files/{found['id']}/thumb")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, "content-type"), "image/png")
        self.assertEqual(Image.open(io.BytesIO(body)).size, (320, 240))
        response, _ = yield self.get(f"/files/{found['id']}/shot.png")
        self.assertEqual(self.header(response, "content-disposition"), "inline")
        self.assertEqual(self.header(response, "content-type"), "image/png")

    @defer.inlineCallbacks
    def test_a_jpegs_orientation_is_applied_and_its_gps_removed(self):
        yield self.serve_files()
        _, token = yield self.member("ann")
        original = jpeg_with_gps()
        self.assertTrue(thumbnails.has_gps(original))
        found = yield self.upload(token, original, name="photo.jpg", kind="image/jpeg")
        self.assertEqual((found["width"], found["height"]), (20, 40))
        _, kept = yield self.get(f"/files/{found['id']}/photo.jpg")
        self.assertFalse(thumbnails.has_gps(kept))
        self.assertEqual(Image.open(io.BytesIO(kept)).getexif().get(0x010F), "camera")
        _, thumb = yield self.get(f"/files/{found['id']}/thumb")
        self.assertEqual(Image.open(io.BytesIO(thumb)).getexif(), {})

    @defer.inlineCallbacks
    def test_a_large_turned_jpegs_size_and_thumbnail_are_upright(self):
        yield self.serve_files()
        _, token = yield self.member("ann")
        found = yield self.upload(token, turned_photo(), name="photo.jpg", kind="image/jpeg")
        self.assertEqual((found["width"], found["height"], found["thumb"]), (1600, 3200, True))
        _, thumb = yield self.get(f"/files/{found['id']}/thumb")
        self.assertEqual(Image.open(io.BytesIO(thumb)).size, (160, 320))

    @defer.inlineCallbacks
    def test_a_decompression_bomb_is_kept_as_a_plain_file(self):
        yield self.serve_files()
        _, token = yield self.member("ann")
        found = yield self.upload(token, bomb_png(), name="bomb.png", kind="image/png")
        self.assertEqual(found["type"], "image/png")
        self.assertNotIn("width", found)
        self.assertNotIn("thumb", found)
        response, _ = yield self.get(f"/files/{found['id']}/thumb")
        self.assertEqual(response.code, 404)

    @defer.inlineCallbacks
    def test_a_polyglot_is_served_as_the_image_it_starts_as(self):
        yield self.serve_files()
        _, token = yield self.member("ann")
        polyglot = b"GIF89a<html><script>alert(document.cookie)</script></html>"
        found = yield self.upload(token, polyglot, name="x.html", kind="text/html")
        self.assertEqual(found["type"], "image/gif")
        response, body = yield self.get(f"/files/{found['id']}/x.html")
        self.assertEqual(body, polyglot)
        self.assertEqual(self.header(response, "content-type"), "image/gif")
        self.assertEqual(self.header(response, "x-content-type-options"), "nosniff")
        self.assertEqual(self.header(response, "content-security-policy"), "default-src 'none'; sandbox")

    @defer.inlineCallbacks
    def test_svg_and_html_are_attachments(self):
        yield self.serve_files()
        _, token = yield self.member("ann")
        svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
        found = yield self.upload(token, svg, name="pic.svg", kind="image/svg+xml")
        self.assertEqual(found["type"], "image/svg+xml")
        response, _ = yield self.get(f"/files/{found['id']}/pic.svg")
        self.assertEqual(self.header(response, "content-disposition"), "attachment; filename*=UTF-8''pic.svg")
        self.assertEqual(self.header(response, "content-security-policy"), "default-src 'none'; sandbox")
        found = yield self.upload(token, b"<script>alert(1)</script>", name="p.html", kind="text/html")
        response, _ = yield self.get(f"/files/{found['id']}/p.html")
        self.assertTrue(self.header(response, "content-disposition").startswith("attachment;"))


class InACluster(FilesOverHttp):
    """Two nodes on a real Valkey, their files in a real S3-compatible
    server's bucket (moto's): a file uploaded on one node downloads from
    the other, with a token the first gave."""

    @defer.inlineCallbacks
    def setUp(self):
        from tests.redisserver import RedisServer
        from tests.s3server import S3Server

        self.redis = yield RedisServer.started(self)
        self.s3 = yield S3Server.started(self)
        for name, value in self.s3.environ().items():  # what an operator exports
            self.addCleanup(_restore, name, os.environ.get(name))
            os.environ[name] = value

    @defer.inlineCallbacks
    def test_a_file_of_one_node_on_another(self):
        first = yield self.serve_files("s3://chat-files/up", self.redis.url)
        ann, token = yield self.member("ann", "secret")
        second = yield self.serve_files("s3://chat-files/up", self.redis.url)
        self.assertIsNot(first, second)
        bob, _ = yield self.member("bob", "secret")  # the second node's: it knows the room, and ann
        ann.send(codec.Moderate("secret", "mode", invite_only=True))
        yield ann.expect(codec.MessagePacket)
        self.web_port = first.web_port
        found = yield self.upload(token, b"across", room="secret", name="x.txt")
        self.web_port = second.web_port
        path = f"/files/{found['id']}/x.txt"
        nobody, _ = yield self.get(path)
        self.assertEqual(nobody.code, 404)
        response, body = yield self.get(path, token)  # ann's token, from the first node
        self.assertEqual((response.code, body), (200, b"across"))
        again = yield self.upload(token, b"second", room="secret", name="y.txt")  # to the second node
        ann.send(codec.Say("both", room="secret", files=[found["id"], again["id"]]))
        said = yield ann.expect(codec.MessagePacket)
        self.assertEqual([f.id for f in said.files], [found["id"], again["id"]])
        while True:  # bob, on the other node, gets them through the room's stream
            seen = yield bob.expect(codec.MessagePacket)
            if seen.text == "both":
                break
        self.assertEqual(seen.files, said.files)
        bob.send(codec.HistoryRequest(room="secret"))
        page = yield bob.expect(codec.HistoryPage)
        self.assertEqual(page.messages[-1].files, said.files)

    @defer.inlineCallbacks
    def joined(self, nick: str, *rooms: str):
        """A version 2 client in ``rooms`` only (not general, which every node follows), and its token."""
        client = yield self.client(nick, version=2)
        for room in rooms:
            client.send(codec.Join(room))
            yield client.expect(codec.RoomState)
        client.send(codec.Files("t"))
        token = yield client.expect(codec.FilesToken)
        return client, token.token

    @defer.inlineCallbacks
    def test_a_token_is_good_on_a_node_that_holds_none_of_its_rooms(self):
        """The second node has no member in any room of ann's: her token
        uploads and downloads there exactly as on her own node, and what a
        member may do (a private room's file) is checked against the shared
        state, including once she has left and once her session has ended."""
        first = yield self.serve_files("s3://chat-files/up", self.redis.url)
        ann, token = yield self.joined("ann", "secret", "open")
        ann.send(codec.Moderate("secret", "mode", invite_only=True))
        yield ann.expect(codec.MessagePacket)
        second = yield self.serve_files("s3://chat-files/up", self.redis.url)
        _, bobs = yield self.joined("bob", "elsewhere")  # the second node's, in no room of ann's
        self.assertNotIn("secret", second.hub.directory.rooms)
        self.web_port = second.web_port
        hidden = yield self.upload(token, b"on the second node", room="secret", name="h.txt")
        shown = yield self.upload(token, b"open to all", room="open", name="o.txt")
        body = yield self.upload(token, b"x", room="elsewhere", status=403)
        self.assertEqual(body["error"], "not_a_member")
        body = yield self.upload(token, b"x", room="nowhere", status=404)
        self.assertEqual(body["error"], "no_such_room")
        for port in (first.web_port, second.web_port):  # the same answers on both nodes
            self.web_port = port
            response, body = yield self.get(f"/files/{hidden['id']}/h.txt", token)
            self.assertEqual((response.code, body), (200, b"on the second node"))
            response, _ = yield self.get(f"/files/{hidden['id']}/h.txt")
            self.assertEqual(response.code, 404)
            response, _ = yield self.get(f"/files/{hidden['id']}/h.txt", bobs)
            self.assertEqual(response.code, 404)
            response, body = yield self.get(f"/files/{shown['id']}/o.txt")
            self.assertEqual((response.code, body), (200, b"open to all"))
        session = first.hub.session_for("ann")
        sig = first.hub.files.signature(hidden["id"], session)  # an IRC link of ann's
        response, body = yield self.get(f"/files/{hidden['id']}/h.txt?sig={sig}")
        self.assertEqual((response.code, body), (200, b"on the second node"))
        ann.send(codec.Part("secret"))
        yield ann.expect(codec.Left)
        response, _ = yield self.get(f"/files/{hidden['id']}/h.txt", token)
        self.assertEqual(response.code, 404, "a member no more")
        body = yield self.upload(token, b"x", room="secret", status=404)  # nobody in it now
        self.assertEqual(body["error"], "no_such_room")
        yield self.upload(token, b"still good", room="open", name="p.txt")
        ann.transport.loseConnection()
        yield ann.lost
        yield until(lambda: first.hub.session_for("ann") is None)
        body = yield self.upload(token, b"x", room="open", status=401)
        self.assertEqual(body["error"], "bad_token")

    @defer.inlineCallbacks
    def test_an_accounts_token_and_irc_link_on_a_node_that_holds_none_of_its_rooms(self):
        first = yield self.serve_files("s3://chat-files/up", self.redis.url)
        carol, _ = yield self.joined("carol")
        carol.send(codec.AccountRequest("register", "correct horse battery staple 9", ref="r"))
        yield carol.expect(codec.Done)
        carol.send(codec.Join("vault"))
        yield carol.expect(codec.RoomState)
        carol.send(codec.Moderate("vault", "mode", key="pw"))
        yield carol.expect(codec.MessagePacket)
        carol.send(codec.Files("t"))
        token = (yield carol.expect(codec.FilesToken)).token
        second = yield self.serve_files("s3://chat-files/up", self.redis.url)
        self.assertNotIn("vault", second.hub.directory.rooms)
        found = yield self.upload(token, b"kept", room="vault", name="k.txt")
        path = f"/files/{found['id']}/k.txt"
        response, body = yield self.get(path, token)
        self.assertEqual((response.code, body), (200, b"kept"))
        sig = first.hub.files.signature(found["id"], first.hub.session_for("carol"))
        response, body = yield self.get(f"{path}?sig={sig}")
        self.assertEqual((response.code, body), (200, b"kept"))
        response, _ = yield self.get(path)
        self.assertEqual(response.code, 404)


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
