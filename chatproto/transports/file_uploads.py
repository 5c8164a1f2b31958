"""Uploads over HTTP (docs/protocol.md 20.3): ``POST /files`` judged from
its headers, before a byte of its body is read (:meth:`ChatRequest.gotLength`),
then written to a temporary file as it arrives, hashed on the way; what it
is (its type, an image's size and thumbnail) is found on a worker thread.

A refusal is answered at once and the connection closed, so a body that
would be refused is never read.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from typing import Any
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from chatproto.backends.files import StoredFile
from chatproto.codec import ErrorCode, ProtocolError, dumps
from chatproto.core.files import Bearer, Files
from chatproto.uploads import Examined, clean_name, declared_type, examine, name_allowed

log = Logger()

_STATUS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    413: "Content Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    507: "Insufficient Storage",
}


class Refused(Exception):
    """An upload refused with an HTTP status and an error code (20.3)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> bytes:
        return dumps({"error": self.code, "message": self.message}).encode("utf-8")


def bearer(request: Request, query: dict[bytes, list[bytes]] | None = None) -> str | None:
    """The token of ``Authorization: Bearer``, or of ``?token=``."""
    header = request.getHeader("authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return query_text(query if query is not None else (request.args or {}), b"token")


def query_text(args: dict[bytes, list[bytes]], name: bytes) -> str | None:
    """A query argument as text (None if absent or not UTF-8)."""
    values = args.get(name)
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        return None


class Upload:
    """One ``POST /files``, from its headers to its answer."""

    def __init__(self, files: Files, request: ChatRequest, length: int | None, path: bytes) -> None:
        self.files = files
        self.request = request
        self.length = length
        self.query = parse_qs(path.partition(b"?")[2], keep_blank_values=True)
        self.refused = False
        self.holder: Bearer | None = None  # whose token: the session, here or on another node
        self.room = ""  # the room's key
        self.name = ""
        self.counted = False  # in the session's uploads under way
        self.size = 0
        self.sha = hashlib.sha256()
        self.file: io.BufferedWriter | None = None
        self.path: str | None = None
        self.verdict: Deferred[None] = Deferred()  # every check of 20.3 passed

    def start(self) -> None:
        """Checks 1 to 6 while the body waits unread: at once where this node
        knows the session, after a look at the shared state where another
        node holds it."""
        fd, self.path = tempfile.mkstemp(prefix="upload-", dir=self.files.space.temp)
        self.file = os.fdopen(fd, "wb")
        transport: Any = self.request.channel.transport
        transport.pauseProducing()  # no more of the body until the checks say yes

        def resume(_: object) -> None:
            if not self.refused:
                transport.resumeProducing()

        token = bearer(self.request, self.query)
        room = query_text(self.query, b"room")
        holder = self.files.uploader(token, self._key(room)) if token else succeed(None)
        checked = holder.addCallback(self._check, room)
        judged = checked.addCallback(lambda _: self._quota(self.length or 0)).addCallback(self._judged)
        judged.addErrback(self._failed).addBoth(resume)

    def _key(self, room: str | None) -> str:
        """The key of a valid room name; "" for none."""
        try:
            return self.files.directory.key_of(room) if room else ""
        except ProtocolError:
            return ""

    def _check(self, holder: Bearer | None, room: str | None) -> None:
        """Checks 1 to 4, in that order."""
        files = self.files
        if holder is None:
            raise Refused(401, "bad_token", "no valid token: ask for one with FILES")
        self.holder = holder
        name = query_text(self.query, b"name")
        if not room or name is None or not name_allowed(name):
            raise Refused(400, "bad_request", "give room and name (1 to 255 bytes of UTF-8)")
        try:
            self.room = files.upload_room(holder, room)
        except ProtocolError as e:
            status = {ErrorCode.NOT_A_MEMBER: 403, ErrorCode.BAD_ROOM: 400}.get(e.code, 404)
            raise Refused(status, "bad_request" if status == 400 else e.code, e.message) from None
        self.name = clean_name(name)
        if self.length is not None and self.length > files.limits.max_upload:
            raise Refused(413, "too_large", f"files are at most {files.limits.max_upload} bytes")

    def _quota(self, size: int) -> Deferred[str | None]:
        """Check 5: why ``size`` more bytes of the uploader's are refused, or None."""
        assert self.holder is not None
        return self.files.quota_refusal(self.holder.owner, size)

    def _judged(self, refusal: str | None) -> None:
        if self.refused:
            return
        assert self.holder is not None
        if refusal is not None:
            self.refuse(Refused(507, "quota_exceeded", refusal))
        elif not self.files.begin_upload(self.holder.id):
            self.refuse(Refused(429, "rate_limited", "too many uploads at once: wait for one to finish"))
        else:
            self.counted = True
            # Past every check: the body may take longer than a request's deadline.
            channel: Any = self.request.channel
            if hasattr(channel, "long_request"):
                channel.long_request()
            self.verdict.callback(None)

    def _failed(self, failure: Failure) -> None:
        if failure.check(Refused):
            refusal = failure.value
            assert isinstance(refusal, Refused)
            self.refuse(refusal)
            return
        log.failure("files: an upload's checks failed", failure)
        self.refuse(Refused(500, "internal", "the server could not check the upload"))

    def chunk(self, data: bytes) -> None:
        """A piece of the body: to the file, hashed, counted."""
        if self.refused or self.file is None:
            return
        self.size += len(data)
        if self.size > self.files.limits.max_upload:
            limit = self.files.limits.max_upload
            self.refuse(Refused(413, "too_large", f"files are at most {limit} bytes"))
            return
        self.sha.update(data)
        self.file.write(data)

    def refuse(self, refusal: Refused) -> None:
        """Answer now and close: whatever was read of the body is thrown away."""
        if self.refused:
            return
        self.refused = True
        self.cleanup()
        # No "100 Continue" after the refusal: the body is not wanted.
        self.request.requestHeaders.removeHeader(b"expect")
        channel: Any = self.request.channel
        if channel is None or channel.transport is None:
            return
        body = refusal.body()
        head = (
            f"HTTP/1.1 {refusal.status} {_STATUS.get(refusal.status, 'Error')}\r\n"
            "content-type: application/json\r\nx-content-type-options: nosniff\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        channel.transport.write(head.encode("ascii") + body)
        channel.loseConnection()

    def cleanup(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.path is not None:
            _unlink(self.path)
            _unlink(self.path + ".thumb")
            self.path = None
        if self.counted and self.holder is not None:
            self.counted = False
            self.files.end_upload(self.holder.id)

    def finish(self) -> Deferred[StoredFile]:
        """The whole body is in: once checked, judged on a thread, then kept."""
        return self.verdict.addCallback(lambda _: self._quota_of_size()).addCallback(self._examine)

    def _quota_of_size(self) -> Deferred[Any]:
        if self.length is not None:
            return succeed(None)
        return self._quota(self.size).addCallback(self._over)

    def _over(self, refusal: str | None) -> None:
        if refusal is not None:
            raise Refused(507, "quota_exceeded", refusal)

    def _examine(self, _: Any) -> Deferred[StoredFile]:
        assert self.file is not None and self.path is not None
        self.file.close()
        self.file = None
        declared = declared_type(self.request.getHeader("content-type"))
        limit = self.files.limits.max_image_pixels
        d = deferToThread(examine, self.path, declared, self.sha.hexdigest(), limit)
        return d.addCallback(self._keep)

    def _keep(self, found: Examined) -> Deferred[StoredFile]:
        assert self.holder is not None and self.path is not None
        thumb = (found.thumb_digest, found.thumb) if found.thumb and found.thumb_digest else None
        return self.files.keep(
            self.holder.owner,
            self.room,
            self.name,
            found.type,
            found.digest,
            found.size,
            self.path,
            found.width,
            found.height,
            thumb,
        )


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class ChatRequest(Request):
    """The ``--web`` site's requests: an upload is taken in as it arrives
    (:class:`Upload`); any other request is Twisted's."""

    upload: Upload | None = None

    def gotLength(self, length: int | None) -> None:
        channel: Any = self.channel
        hub = getattr(getattr(channel, "site", None), "hub", None)
        files = hub.files if hub is not None else None
        command = getattr(self.channel, "_command", b"")
        path = getattr(self.channel, "_path", b"")
        if files is None or command != b"POST" or path.partition(b"?")[0] != b"/files":
            super().gotLength(length)
            return
        self.content = io.BytesIO()  # never read as a form: the body is the upload's
        self.upload = Upload(files, self, length, path)
        self.upload.start()

    def handleContentChunk(self, data: bytes) -> None:
        if self.upload is None:
            super().handleContentChunk(data)
        else:
            self.upload.chunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.upload is not None and self.upload.refused:
            return  # answered already, and closing
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Failure) -> None:
        if self.upload is not None and not self.upload.refused:
            self.upload.refused = True  # gone: nothing of it is kept
            self.upload.cleanup()
        super().connectionLost(reason)
