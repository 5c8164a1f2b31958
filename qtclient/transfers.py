"""Files over HTTP for the desktop client (docs/protocol.md 20.3, 20.4): an
upload streamed from an open file with its progress, a download streamed to
disk, a small fetch (a thumbnail, an image to show) into memory. No Qt.

Everything runs on the reactor through ``twisted.web.client.Agent``: the
body is read and written a piece at a time, so neither the reactor nor the
window waits for a whole file. Each call's Deferred can be cancelled, which
closes its connection.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import fields
from typing import IO, Any
from urllib.parse import quote, urlencode

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer, ResponseDone, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

from chatproto import codec

#: Largest answer read into memory: a JSON answer, a thumbnail, an image to show.
MAX_IN_MEMORY = 64 * 1024 * 1024
#: Bytes read from the file for each write of an upload's body.
PIECE = 64 * 1024

Progress = Callable[[int, int], None]  # done, total (bytes)


class HttpRefusal(Exception):
    """The server said no: its status and, when it gave them, its code and words."""

    def __init__(self, status: int, code: str = "", message: str = "") -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def refusal_words(refusal: HttpRefusal, max_upload: int | None = None) -> str:
    """What to tell the user about a refused upload or download."""
    status = refusal.status
    if status == 413:
        limit = f" (the server takes files up to {size_words(max_upload)})" if max_upload else ""
        return f"the file is too large{limit}"
    if status == 507:
        return "there is no room left for it: " + (refusal.message or "the upload quota is used up")
    if status == 401:
        return "the server did not accept the upload token, even a new one"
    if status == 429:
        return "too many uploads at once: wait for one to finish"
    if status == 404:
        return "the file is gone, or you may not have it"
    if status == 403:
        return "you are not in that room any more"
    return refusal.message or f"the server answered {status}"


def size_words(size: int | None) -> str:
    """A size as people read it: bytes, KB, MB or GB."""
    value = float(size or 0)
    for unit in ("bytes", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def files_address(web_address: str, token: codec.FilesToken) -> str:
    """Where uploads go: the token's ``url`` if the server gave an address,
    else that path on the server's web site (``web_address``)."""
    if token.url.startswith(("http://", "https://")):
        return token.url.rstrip("/")
    return web_address.rstrip("/") + "/" + token.url.strip("/")


def file_address(files: str, file: codec.File, thumb: bool = False) -> str:
    """A file's download address (or its thumbnail's) under ``files``."""
    return f"{files}/{quote(file.id, safe='')}/" + ("thumb" if thumb else quote(file.name, safe=""))


def file_from(body: dict[str, Any]) -> codec.File:
    """A File from the upload's answer (20.1); unknown fields are ignored."""
    known = {f.name for f in fields(codec.File)}
    return codec.File(**{key: value for key, value in body.items() if key in known})


def _headers(token: str | None, **more: str) -> Headers:
    headers = Headers({b"user-agent": [b"chat-client"]})
    if token:
        headers.setRawHeaders(b"authorization", [f"Bearer {token}".encode("ascii")])
    for name, value in more.items():
        headers.setRawHeaders(name.replace("_", "-").encode("ascii"), [value.encode("utf-8")])
    return headers


class _Counting:
    """A consumer that passes writes on and reports how many bytes went."""

    def __init__(self, consumer: Any, total: int, progress: Progress) -> None:
        self.consumer = consumer
        self.total = total
        self.progress = progress
        self.sent = 0

    def write(self, data: bytes) -> None:
        self.consumer.write(data)
        self.sent += len(data)
        self.progress(self.sent, self.total)

    def __getattr__(self, name: str) -> Any:  # registerProducer and the rest
        return getattr(self.consumer, name)


class _KeptOpen:
    """A file the producer reads but does not close: a retry reads it again,
    and its owner closes it."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source

    def read(self, size: int) -> bytes:
        return self.source.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.source.seek(offset, whence)

    def tell(self) -> int:
        return self.source.tell()

    def close(self) -> None:
        pass


class ProgressBody(FileBodyProducer):
    """An upload's body: the open file a piece at a time, its progress told."""

    def __init__(self, source: IO[bytes], progress: Progress) -> None:
        super().__init__(_KeptOpen(source), readSize=PIECE)
        self._progress = progress

    def startProducing(self, consumer: Any) -> Deferred[None]:
        return super().startProducing(_Counting(consumer, self.length, self._progress))


def _known_length(response: IResponse) -> int:
    """The body's length if the answer says it (0 if not: chunked)."""
    return response.length if isinstance(response.length, int) else 0


@inlineCallbacks
def _answer(response: IResponse) -> Any:
    """A JSON answer's body, or HttpRefusal for a status that is not 2xx."""
    if _known_length(response) > MAX_IN_MEMORY:
        raise HttpRefusal(response.code, "too_large", "the answer is too large")
    raw = yield readBody(response)
    try:
        body = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, ValueError):
        body = {}
    if not 200 <= response.code < 300:
        body = body if isinstance(body, dict) else {}
        raise HttpRefusal(response.code, str(body.get("error", "")), str(body.get("message", "")))
    return body


class Transfers:
    """Uploads and downloads for one session: ``tokens(fresh)`` gives an
    upload token (a new one after a 401), ``web_address`` the server's web
    site, which ``/files`` is on."""

    def __init__(
        self, agent: IAgent, tokens: Callable[[bool], Deferred[codec.FilesToken]], web_address: str
    ) -> None:
        self.agent = agent
        self.tokens = tokens
        self.web_address = web_address

    @inlineCallbacks
    def upload(self, room: str, name: str, source: IO[bytes], media_type: str, progress: Progress) -> Any:
        """POST ``source`` (an open file, at its start) into ``room``; fires
        with the File, or fails with HttpRefusal (401 only when a new token
        was refused too) or FilesUnavailable."""
        for attempt in (0, 1):
            token = yield self.tokens(attempt > 0)
            query = urlencode({"room": room, "name": name})
            url = f"{files_address(self.web_address, token)}?{query}"
            source.seek(0)
            body = ProgressBody(source, progress)
            headers = _headers(token.token, content_type=media_type or "application/octet-stream")
            response = yield self.agent.request(b"POST", url.encode("utf-8"), headers, body)
            if response.code == 401 and attempt == 0:
                yield readBody(response).addErrback(lambda _: None)
                continue  # the token expired or its session ended: once more with a new one
            answer = yield _answer(response)
            return file_from(answer)
        raise AssertionError("unreachable")  # pragma: no cover

    @inlineCallbacks
    def fetch(self, file: codec.File, thumb: bool = False) -> Any:
        """A file's bytes (or its thumbnail's) in memory, with the session's token."""
        url = yield self.address(file, thumb)
        token = yield self._token_or_none()
        response = yield self.agent.request(b"GET", url.encode("utf-8"), _headers(token))
        if response.code != 200:
            yield _answer(response)
        if _known_length(response) > MAX_IN_MEMORY:
            response.deliverBody(_Discard())
            raise HttpRefusal(413, "too_large", "too large to show")
        data = yield readBody(response)
        return data

    @inlineCallbacks
    def download(self, file: codec.File, path: str, progress: Progress) -> Any:
        """Stream a file to ``path`` (through ``path.part``, renamed when
        whole); fires with the bytes written."""
        url = yield self.address(file)
        token = yield self._token_or_none()
        response = yield self.agent.request(b"GET", url.encode("utf-8"), _headers(token))
        if response.code != 200:
            yield _answer(response)
        total = _known_length(response) or file.size
        done: Deferred[int] = Deferred()
        response.deliverBody(ToDisk(path + ".part", total, progress, done))
        written = yield done
        os.replace(path + ".part", path)
        return written

    @inlineCallbacks
    def address(self, file: codec.File, thumb: bool = False) -> Any:
        token = yield self.tokens(False)
        return file_address(files_address(self.web_address, token), file, thumb)

    def _token_or_none(self) -> Deferred[str | None]:
        return self.tokens(False).addCallback(lambda token: token.token)


class _Discard(Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass


class ToDisk(Protocol):
    """A download's body written to a file as it arrives (a piece at a time,
    never the whole file in memory); ``done`` fires with the bytes written,
    or fails (the partial file removed) if the connection broke."""

    def __init__(self, path: str, total: int, progress: Progress, done: Deferred[int]) -> None:
        self.path = path
        self.total = total
        self.progress = progress
        self.done = done
        self.written = 0
        self.out: IO[bytes] | None = open(path, "wb")  # closed when the body ends

    def dataReceived(self, data: bytes) -> None:
        if self.out is None:
            return
        try:
            self.out.write(data)
        except OSError as e:
            self._end(Failure(e))
            self.transport.stopProducing()
            return
        self.written += len(data)
        self.progress(self.written, self.total)

    def connectionLost(self, reason: Failure) -> None:
        self._end(None if reason.check(ResponseDone) else reason)

    def _end(self, failure: Failure | None) -> None:
        out, self.out = self.out, None
        if out is None:
            return
        out.close()
        if failure is None:
            self.done.callback(self.written)
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        self.done.errback(failure)
