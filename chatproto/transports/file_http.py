"""``/files`` on the ``--web`` site (docs/protocol.md 20.3, 20.4): POST an
upload (taken in by :mod:`~chatproto.transports.file_uploads` as it
arrives), GET a file or its thumbnail (streamed by
:mod:`~chatproto.transports.file_downloads`) to whoever may have it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from chatproto.backends.files import StoredFile
from chatproto.codec import body_of
from chatproto.core.files import Files, file_of
from chatproto.transports.file_downloads import FILE_HEADERS, BlobProducer, byte_range
from chatproto.transports.file_uploads import Refused, Upload, bearer, query_text
from chatproto.uploads import INLINE

log = Logger()


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
        if record is None:
            _finish(_not_found(request), request)
            return None
        token = bearer(request)
        sig = query_text(request.args, b"sig")
        d = self.files.readable(record, token, sig)
        return d.addCallback(self._allowed, request, record, name)

    def _allowed(
        self, allowed: bool, request: Request, record: StoredFile, name: str
    ) -> Deferred[None] | None:
        if not allowed:
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


def _file_body(record: StoredFile) -> dict[str, Any]:
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
