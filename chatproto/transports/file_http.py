"""Files over HTTP on the ``--web`` site (docs/protocol.md 20.3, 20.4):
``POST /files`` streams an upload to disk, ``GET /files/<id>/<name>`` and
``/files/<id>/thumb`` stream a file back as the client takes it.

An upload is judged from its headers, before a byte of its body is read
(:class:`ChatRequest.gotLength`): a refusal is answered at once and the
connection closed, so a body that would be refused is never read. The body
goes to a temporary file as it arrives, hashed on the way; what it is (its
type, an image's size and thumbnail) is found on a worker thread.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from typing import Any
from urllib.parse import parse_qs, quote

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from chatproto.backends.files import READ_PIECE, FileStore, StoredFile
from chatproto.codec import ErrorCode, ProtocolError, dumps
from chatproto.core.connection import Session
from chatproto.core.files import Files, file_of
from chatproto.core.rooms import ChatRoom
from chatproto.thumbnails import sniff
from chatproto.uploads import INLINE, Examined, clean_name, declared_type, examine, name_allowed

log = Logger()

#: Every file answer's headers (20.4): never sniffed, never run, never shared.
FILE_HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; sandbox",
    "cache-control": "private",
}

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
    return _arg(query if query is not None else (request.args or {}), b"token")


def _arg(args: dict[bytes, list[bytes]], name: bytes) -> str | None:
    values = args.get(name)
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        return None


# -- uploading ----------------------------------------------------------------------


class Upload:
    """One ``POST /files``, from its headers to its answer."""

    def __init__(self, files: Files, request: ChatRequest, length: int | None, path: bytes) -> None:
        self.files = files
        self.request = request
        self.length = length
        self.query = parse_qs(path.partition(b"?")[2], keep_blank_values=True)
        self.refused = False
        self.session: Session | None = None
        self.owner = ""  # whose the upload is: the token says
        self.room: ChatRoom | None = None
        self.name = ""
        self.counted = False  # in the session's uploads under way
        self.size = 0
        self.sha = hashlib.sha256()
        self.file: io.BufferedWriter | None = None
        self.path: str | None = None
        self.verdict: Deferred[None] = Deferred()  # the quota and the uploads at once

    def start(self) -> None:
        """Checks 1 to 4 at once, 5 and 6 while the body waits unread."""
        try:
            self._check_at_once()
        except Refused as refusal:
            self.refuse(refusal)
            return
        fd, self.path = tempfile.mkstemp(prefix="upload-", dir=self.files.space.temp)
        self.file = os.fdopen(fd, "wb")
        transport: Any = self.request.channel.transport
        transport.pauseProducing()  # no more of the body until the quota says yes

        def resume(_: object) -> None:
            if not self.refused:
                transport.resumeProducing()

        d = self.files.quota_refusal(self.owner, self.length or 0)
        d.addCallback(self._judged)
        d.addErrback(self._failed)
        d.addBoth(resume)

    def _check_at_once(self) -> None:
        request, files = self.request, self.files
        token = bearer(request, self.query)
        holder = files.bearer(token) if token else None
        if holder is None:
            raise Refused(401, "bad_token", "no valid token: ask for one with FILES")
        self.session, self.owner = holder.session, holder.owner
        room, name = _arg(self.query, b"room"), _arg(self.query, b"name")
        if not room or name is None or not name_allowed(name):
            raise Refused(400, "bad_request", "give room and name (1 to 255 bytes of UTF-8)")
        try:
            self.room = files.upload_room(self.session, room)
        except ProtocolError as e:
            status = {ErrorCode.NOT_A_MEMBER: 403, ErrorCode.BAD_ROOM: 400}.get(e.code, 404)
            raise Refused(status, "bad_request" if status == 400 else e.code, e.message) from None
        self.name = clean_name(name)
        if self.length is not None and self.length > files.limits.max_upload:
            raise Refused(413, "too_large", f"files are at most {files.limits.max_upload} bytes")

    def _judged(self, refusal: str | None) -> None:
        if self.refused:
            return
        assert self.session is not None
        if refusal is not None:
            self.refuse(Refused(507, "quota_exceeded", refusal))
        elif not self.files.begin_upload(self.session):
            self.refuse(Refused(429, "rate_limited", "too many uploads at once: wait for one to finish"))
        else:
            self.counted = True
            # Past every check: the body may take longer than a request's deadline.
            channel: Any = self.request.channel
            if hasattr(channel, "long_request"):
                channel.long_request()
            self.verdict.callback(None)

    def _failed(self, failure: Failure) -> None:
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
        if self.counted and self.session is not None:
            self.counted = False
            self.files.end_upload(self.session)

    def finish(self) -> Deferred[StoredFile]:
        """The whole body is in: once checked, judged on a thread, then kept."""
        return self.verdict.addCallback(lambda _: self._quota_of_size()).addCallback(self._examine)

    def _quota_of_size(self) -> Deferred[Any]:
        if self.length is not None:
            return succeed(None)
        return self.files.quota_refusal(self.owner, self.size).addCallback(self._over)

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
        assert self.room is not None and self.path is not None
        thumb = (found.thumb_digest, found.thumb) if found.thumb and found.thumb_digest else None
        return self.files.keep(
            self.owner,
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


# -- the resource -------------------------------------------------------------------


class FilesResource(Resource):
    """``/files``: POST an upload; GET a file or its thumbnail."""

    isLeaf = True

    def __init__(self, files: Files) -> None:
        super().__init__()
        self.files = files

    def render_POST(self, request: Request) -> Any:
        upload = getattr(request, "upload", None)
        if upload is None or request.postpath not in ([], [b""]):
            return _json(request, 404, {"error": "not_found", "message": "POST /files?room=...&name=..."})
        d = upload.finish()
        d.addCallback(lambda record: _json(request, 201, _file_body(record)))
        d.addErrback(self._upload_failed, request)
        d.addBoth(_finish, request, upload)
        return NOT_DONE_YET

    def _upload_failed(self, failure: Failure, request: Request) -> bytes:
        if failure.check(Refused):
            refusal = failure.value
            assert isinstance(refusal, Refused)
            return _json(request, refusal.status, {"error": refusal.code, "message": refusal.message})
        log.failure("files: an upload failed", failure)
        return _json(request, 500, {"error": "internal", "message": "the server could not keep the file"})

    def render_GET(self, request: Request) -> Any:
        postpath = request.postpath or []
        if len(postpath) != 2:
            return _not_found(request)
        try:
            id, name = (part.decode("utf-8") for part in postpath)
        except UnicodeDecodeError:
            return _not_found(request)
        d = self.files.records.get(id)
        d.addCallback(self._found, request, name)
        d.addErrback(self._download_failed, request)
        return NOT_DONE_YET

    def _found(self, record: StoredFile | None, request: Request, name: str) -> Deferred[None] | None:
        token = bearer(request)
        sig = _arg(request.args, b"sig")
        if record is None or not self.files.readable(record, token, sig):
            _finish(_not_found(request), request)
            return None
        thumb = name == "thumb"
        digest = record.thumb if thumb else record.digest
        if digest is None:
            _finish(_not_found(request), request)
            return None
        store = self.files.store
        return store.size(digest).addCallback(self._serve, request, record, digest, thumb)

    def _serve(
        self, size: int | None, request: Request, record: StoredFile, digest: str, thumb: bool
    ) -> None:
        if size is None:
            _finish(_not_found(request), request)
            return
        for header, value in FILE_HEADERS.items():
            request.setHeader(header, value)
        request.setHeader("etag", f'"{digest}"')
        request.setHeader("accept-ranges", "bytes")
        if thumb:
            request.setHeader("content-disposition", "inline")
        elif record.type in INLINE:
            request.setHeader("content-type", record.type)
            request.setHeader("content-disposition", "inline")
        else:
            kind = record.type + ("; charset=utf-8" if record.type == "text/plain" else "")
            request.setHeader("content-type", kind)
            disposition = f"attachment; filename*=UTF-8''{quote(record.name, safe='')}"
            request.setHeader("content-disposition", disposition)
        if request.getHeader("if-none-match") == f'"{digest}"':
            request.setResponseCode(304)
            request.finish()
            return
        span = byte_range(request.getHeader("range"), size)
        if span is None:
            request.setResponseCode(416)
            request.setHeader("content-range", f"bytes */{size}")
            request.finish()
            return
        start, end = span
        if (start, end) != (0, size):
            request.setResponseCode(206)
            request.setHeader("content-range", f"bytes {start}-{end - 1}/{size}")
        request.setHeader("content-length", str(end - start))
        channel: Any = request.channel
        if hasattr(channel, "long_request"):
            channel.long_request()
        BlobProducer(self.files.store, digest, start, end, request, sniff_type=thumb).start()

    def _download_failed(self, failure: Failure, request: Request) -> None:
        log.failure("files: a download failed", failure)
        if (
            not getattr(request, "_disconnected", False)
            and not request.finished
            and not request.startedWriting
        ):
            _finish(
                _json(request, 500, {"error": "internal", "message": "the file could not be read"}), request
            )


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The span ``[start, end)`` a ``Range`` header asks for (the whole file
    without one, or for one this server doesn't serve: several ranges);
    None if it can't be satisfied (416)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return 0, size
    first, _, last = header[6:].strip().partition("-")
    try:
        if not first:  # the last N bytes
            count = int(last)
            return (max(size - count, 0), size) if count > 0 and size > 0 else None
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return 0, size
    if start >= size or end <= start:
        return None
    return start, min(end, size)


@implementer(IPushProducer)
class BlobProducer:
    """A blob's bytes from ``start`` to ``end``, a piece at a time, read
    only when the client has taken the previous one (pause and resume)."""

    def __init__(
        self, store: FileStore, digest: str, start: int, end: int, request: Request, sniff_type: bool = False
    ) -> None:
        self.store = store
        self.digest = digest
        self.at = start
        self.end = end
        self.request = request
        self.sniff_type = sniff_type  # a thumbnail's type is in its first bytes
        self.paused = False
        self.reading = False
        self.stopped = False

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self._next()

    def _next(self) -> None:
        if self.paused or self.reading or self.stopped:
            return
        if self.at >= self.end:
            self.stopped = True
            self.request.unregisterProducer()
            self.request.finish()
            return
        self.reading = True
        wanted = min(READ_PIECE, self.end - self.at)
        self.store.read(self.digest, self.at, wanted).addCallbacks(self._got, self._failed)

    def _got(self, data: bytes) -> None:
        self.reading = False
        if self.stopped:
            return
        if not data:  # the blob is shorter than it said: end it (the client sees it cut)
            self._failed(Failure(OSError("blob ended early")))
            return
        if self.sniff_type:
            self.sniff_type = False
            self.request.setHeader("content-type", sniff(data) or "application/octet-stream")
        self.at += len(data)
        self.request.write(data)
        self._next()

    def _failed(self, failure: Failure) -> None:
        self.reading = False
        log.failure("files: reading blob {digest} failed", failure, digest=self.digest)
        self.stopped = True
        self.request.unregisterProducer()
        channel: Any = self.request.channel
        if channel is not None and channel.transport is not None:
            channel.transport.abortConnection()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._next()

    def stopProducing(self) -> None:
        self.stopped = True


def _file_body(record: StoredFile) -> dict[str, Any]:
    from chatproto.codec import body_of

    return body_of(file_of(record))


def _json(request: Request, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader("content-type", "application/json")
    request.setHeader("cache-control", "no-store")
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _not_found(request: Request) -> bytes:
    return _json(request, 404, {"error": "not_found", "message": "no such file"})


def _finish(result: Any, request: Request, upload: Upload | None = None) -> None:
    if upload is not None:
        upload.cleanup()
    if getattr(request, "_disconnected", False) or request.finished:
        return
    if isinstance(result, bytes):
        request.setHeader("content-length", str(len(result)))
        request.write(result)
        request.finish()
    elif isinstance(result, Failure):
        log.failure("files: an answer failed", result)
        request.setResponseCode(500)
        request.finish()
