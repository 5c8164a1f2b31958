"""Files (docs/protocol.md 20): upload tokens, who may read a file, what a
SAY may attach, and what goes when a message is deleted or an upload is
never attached.

The bytes and the records are behind :mod:`chatproto.backends.files`; the
HTTP side is :mod:`chatproto.transports.file_http`. Tokens and IRC links
are self-checking (an HMAC with a secret kept in the file store), so every
node of a cluster accepts every node's: a node that holds the session, or
the room, answers from its own state; any other asks the nodes' shared
state (:meth:`Peers.shared_room`), so a token is good for the same things
on every node.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import codec
from chatproto.backends.eventlog import author_of
from chatproto.backends.files import FileRecords, FileStore, FileStoreError, StoredFile
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.connection import Connection, Session, logged_in
from chatproto.core.peers import Peers, Seat, SharedRoom
from chatproto.core.registry import Registry
from chatproto.core.rooms import ChatRoom, Directory, RoomRules
from chatproto.limits import Limits
from chatproto.rules import is_direct

log = Logger()

#: The blob the cluster's shared secret is kept as: a name no SHA-256 of
#: an upload will ever be.
SECRET_BLOB = "0" * 64
#: The upload path FILES_TOKEN names.
UPLOAD_PATH = "/files"
#: Uploads removed per sweep of the unattached ones.
SWEEP_BATCH = 100
#: Longest wait between sweeps, in seconds.
SWEEP_EVERY = 60.0

#: Session id, expiry, 4 random bytes (each token is new); then its nick
#: key, a zero byte and its owner (an account's owner starts with the key,
#: which is not said twice: :func:`_owner_bytes`).
_TOKEN = struct.Struct("!QI4s")
_TOKEN_MAC = 16
#: The longest token read.
MAX_TOKEN = 400


@dataclass(frozen=True, slots=True)
class Bearer:
    """Who a genuine, unexpired token names: a session (its id, and its nick
    key when the token was given), whose its uploads are, and the session
    itself when it is this node's. For a session of another node,
    ``shared`` is the nodes' shared state about it and the room a request
    names."""

    id: int
    key: str
    owner: str
    session: Session | None = None
    shared: SharedRoom | None = None


@dataclass(frozen=True, slots=True)
class FileSpace:
    """Where files are kept and how they are reached: the store of the
    bytes, the records, the address links start with (``--public-url``),
    and where uploads are written while they arrive."""

    store: FileStore
    records: FileRecords
    public_url: str
    temp: str | None = None

    @property
    def files_url(self) -> str:
        return self.public_url.rstrip("/") + UPLOAD_PATH


def file_of(record: StoredFile) -> codec.File:
    """The File a message shows for an upload (20.1)."""
    return codec.File(
        record.id,
        record.name,
        record.size,
        record.type,
        record.width,
        record.height,
        True if record.thumb else None,
    )


def new_id() -> str:
    """128 random bits, 22 characters of URL-safe base64."""
    return _b64(secrets.token_bytes(16))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def is_open(room: ChatRoom) -> bool:
    """A room whose files anyone with their id may read (20.4)."""
    return open_rules(room.rules, room.direct)


def open_rules(rules: RoomRules, direct: bool) -> bool:
    """Whether rules (of a direct conversation, or not) leave a room's files open."""
    return not direct and not rules.invite_only and not rules.key and not rules.secret


def _owner_bytes(key: str, owner: str) -> bytes:
    """A token's key and owner: an account's owner (``key:created``) is
    kept as ``:created``, its key said once."""
    rest = owner[len(key) :] if owner.startswith(f"{key}:") else owner
    return key.encode() + b"\0" + rest.encode()


def _key_and_owner(raw: bytes) -> tuple[str, str]:
    key, _, rest = raw.decode("utf-8", "replace").partition("\0")
    return key, key + rest if rest.startswith(":") else rest


class Files:
    """The core's side of files."""

    def __init__(
        self,
        clock: IReactorTime,
        limits: Limits,
        space: FileSpace,
        registry: Registry,
        directory: Directory,
        peers: Peers,
    ) -> None:
        self.clock = clock
        self.limits = limits
        self.space = space
        self.store = space.store
        self.records = space.records
        self.registry = registry
        self.directory = directory
        self.peers = peers  # the shared state, for sessions and rooms of other nodes
        self._secret: bytes | None = None
        self._claimed: set[str] = set()  # ids a SAY is attaching: no other SAY may
        self._uploading: dict[int, int] = {}  # session id -> uploads under way
        self._sweep: IDelayedCall | None = None
        self._stopped = False

    # -- the secret, and the sweep of unattached uploads -------------------------------

    def start(self) -> Deferred[None]:
        """Check the store, read (or make) the shared secret, then sweep now
        and then; a store that fails leaves files off, saying why."""
        d = self.store.check().addCallback(lambda _: self._load_secret())
        d.addCallback(lambda _: self._schedule())
        d.addErrback(self._off)
        return d

    def _off(self, failure: Failure) -> None:
        if failure.check(FileStoreError):
            log.error("files are off: {why}", why=failure.getErrorMessage())
        else:
            log.failure("files are off: the file store failed", failure)

    def stop(self) -> None:
        self._stopped = True
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None

    @property
    def ready(self) -> bool:
        return self._secret is not None

    def _load_secret(self) -> Deferred[None]:
        def got(size: int | None) -> Deferred[Any]:
            if size:
                return self.store.read(SECRET_BLOB, 0, 64)
            fd, path = tempfile.mkstemp(dir=self.space.temp)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))  # a few bytes: fine on the reactor

            def read_back(_: None) -> Deferred[bytes]:
                # Another node may have put its own first: whatever is kept wins.
                return self.store.read(SECRET_BLOB, 0, 64)

            def removed(result: Any) -> Any:
                os.unlink(path)
                return result

            return self.store.put(SECRET_BLOB, path).addBoth(removed).addCallback(read_back)

        def keep(secret: bytes) -> None:
            self._secret = secret

        return self.store.size(SECRET_BLOB).addCallback(got).addCallback(keep)

    def _schedule(self) -> None:
        if self._stopped:
            return
        self._sweep = self.clock.callLater(min(self.limits.upload_keep, SWEEP_EVERY), self._sweep_now)

    def _sweep_now(self) -> Deferred[None]:
        """Delete the uploads never attached within ``upload_keep``."""
        self._sweep = None
        before = self.clock.seconds() - self.limits.upload_keep
        found = self.records.unattached_before(before, SWEEP_BATCH)
        d = found.addCallback(lambda old: self.forget([r.id for r in old if r.id not in self._claimed]))
        d.addErrback(lambda f: log.failure("files: sweeping unattached uploads failed", f))
        return d.addBoth(lambda _: self._schedule())

    def forget(self, ids: list[str]) -> Deferred[None]:
        """Remove these uploads, then every blob no remaining upload names."""
        if not ids:
            return succeed(None)

        def delete(digests: list[str]) -> Deferred[Any]:
            return gatherResults([self.store.delete(d) for d in digests], consumeErrors=True)

        return self.records.remove(ids).addCallback(delete).addCallback(lambda _: None)

    # -- tokens and signatures ----------------------------------------------------------

    def _mac(self, *parts: bytes) -> bytes:
        assert self._secret is not None
        return hmac.new(self._secret, b"\0".join(parts), hashlib.sha256).digest()

    def token(self, connection: Connection, packet: codec.Files) -> None:
        """FILES: a new token for this session (20.2)."""
        session = logged_in(connection)
        if self._secret is None:
            raise ProtocolError(ErrorCode.NO_FILES, "files are not available on this server right now")
        expires = int(self.clock.seconds() + self.limits.file_token_ttl)
        header = _TOKEN.pack(session.id, expires, secrets.token_bytes(4))
        signed = header + _owner_bytes(session.key, self.owner_of(session))
        mac = self._mac(b"token", signed)[:_TOKEN_MAC]
        limit = self.limits.max_upload
        connection.send(
            codec.FilesToken(_b64(signed + mac), float(expires), self.space.files_url, limit, packet.ref)
        )

    def bearer(self, token: str) -> Bearer | None:
        """What a genuine, unexpired token names, with its session if this
        node holds it; None for any other token, or one whose session this
        node held and has ended (or gave its id to a later one)."""
        raw = _unb64(token) if self._secret is not None and len(token) <= MAX_TOKEN else None
        if raw is None or len(raw) < _TOKEN.size + _TOKEN_MAC:
            return None
        signed, mac = raw[:-_TOKEN_MAC], raw[-_TOKEN_MAC:]
        if not hmac.compare_digest(self._mac(b"token", signed)[:_TOKEN_MAC], mac):
            return None
        id, expires, _ = _TOKEN.unpack(signed[: _TOKEN.size])
        key, owner = _key_and_owner(signed[_TOKEN.size :])
        if self.clock.seconds() >= expires:
            return None
        session = self.registry.sessions.get(id)
        if session is None:
            return Bearer(id, key, owner)  # another node's, or ended: :meth:`uploader` asks
        return Bearer(id, key, owner, session) if self.holds(session, owner) else None

    def uploader(self, token: str, room: str = "") -> Deferred[Bearer | None]:
        """The session a token names if it goes on, here or on another node
        (20.3, check 1); for another node's, with what the shared state says
        of it in ``room`` (a room key, "" for none) for :meth:`upload_room`."""
        found = self.bearer(token)
        if found is None or found.session is not None:
            return succeed(found)

        def lives(shared: SharedRoom | None) -> Bearer | None:
            if shared is None:
                return None  # no other node: it ended
            seated = self._seated(shared.member, found.owner)
            elsewhere = shared.session is not None and shared.session.id == found.id
            if not seated and not (elsewhere and self._seated(shared.session, found.owner)):
                return None
            return Bearer(found.id, found.key, found.owner, None, shared)

        return self.peers.shared_room(room, found.id, found.key).addCallback(lives)

    def _seated(self, seat: Seat | None, owner: str) -> bool:
        """Whether a session of the shared state is ``owner``'s (as
        :meth:`holds` judges a member on another node)."""
        if seat is None:
            return False
        if seat.account:
            return owner.startswith(f"{seat.key}:")
        return author_of(None, seat.id, self.registry.epoch) == owner

    def holds(self, session: Session, owner: str) -> bool:
        """Whether ``owner`` is the session's: its account's or its own. A
        member on another node knows its account's name, not when it was
        made: its name is what is compared."""
        if session.owner is not None or session.connection is not None:
            return self.owner_of(session) == owner
        if session.account:
            return owner.startswith(f"{session.key}:")
        return author_of(None, session.id, self.registry.epoch) == owner

    def signature(self, file_id: str, session: Session) -> str:
        """An IRC link's ``sig``: the file bound to the session's account
        (a guest: its session) (20.6)."""
        owner = self.owner_of(session).encode()
        return _b64(owner) + "." + _b64(self._mac(b"sig", file_id.encode(), owner)[:16])

    def _signed_owner(self, file_id: str, sig: str) -> str | None:
        owner_part, _, mac_part = sig.partition(".")
        owner, mac = _unb64(owner_part), _unb64(mac_part)
        if owner is None or mac is None or self._secret is None:
            return None
        good = self._mac(b"sig", file_id.encode(), owner)[:16]
        return owner.decode("utf-8", "replace") if hmac.compare_digest(good, mac) else None

    def link(self, record: codec.File, session: Session | None = None) -> str:
        """A file's address; with ``session``, signed for it (an IRC link)."""
        url = codec.file_url(self.space.files_url, record)
        return url if session is None else f"{url}?sig={self.signature(record.id, session)}"

    def owner_of(self, session: Session) -> str:
        """Whose uploads are whose: an account's for all its devices, a
        guest's session's (as its messages are, eventlog.author_of)."""
        return session.owner or author_of(None, session.id, self.registry.epoch)

    # -- reading --------------------------------------------------------------------------

    def readable(self, record: StoredFile, token: str | None, sig: str | None) -> Deferred[bool]:
        """Whether a request may have the file (20.4): anyone for a room that
        is open, else a member's token or a member's IRC link. A room this
        node holds is judged here; any other as the shared state has it."""
        room = self.directory.rooms.get(record.room)
        if room is not None:
            return succeed(self._readable_here(room, record, token, sig))
        id, key, owner = 0, "", None
        found = self.bearer(token) if token else None
        if found is not None:
            id, key, owner = found.id, found.key, found.owner
        elif sig and not token:
            owner = self._signed_owner(record.id, sig)
            if owner is not None:
                id, key = _seat_of(owner)

        def judge(shared: SharedRoom | None) -> bool:
            if shared is None or not shared.exists:
                return False  # nobody is in it anywhere: not a room anyone may read from now
            if open_rules(shared.rules, is_direct(record.room)):
                return True
            return owner is not None and self._seated(shared.member, owner)

        return self.peers.shared_room(record.room, id, key).addCallback(judge)

    def _readable_here(self, room: ChatRoom, record: StoredFile, token: str | None, sig: str | None) -> bool:
        if is_open(room):
            return True
        if token:
            found = self.bearer(token)
            member = None if found is None else room.members.get(found.id)
            return found is not None and member is not None and self.holds(member, found.owner)
        if sig:
            owner = self._signed_owner(record.id, sig)
            return owner is not None and any(self.holds(m, owner) for m in room.members.values())
        return False

    # -- uploading ------------------------------------------------------------------------

    def upload_room(self, bearer: Bearer, name: str) -> str:
        """The key of the room an upload names (a valid name), if the
        token's session is a member: no_such_room or not_a_member (20.3)."""
        key = self.directory.key_of(name)
        if bearer.session is not None:
            room = self.directory.rooms.get(key)
            if room is None:
                raise ProtocolError(ErrorCode.NO_SUCH_ROOM, f"there is no room called {name!r}")
            if bearer.session.rooms.get(key) is not room:
                raise ProtocolError(ErrorCode.NOT_A_MEMBER, f"you are not in {room.name!r}")
            return key
        shared = bearer.shared
        if shared is None or not shared.exists:
            raise ProtocolError(ErrorCode.NO_SUCH_ROOM, f"there is no room called {name!r}")
        if not self._seated(shared.member, bearer.owner):
            raise ProtocolError(ErrorCode.NOT_A_MEMBER, f"you are not in {name!r}")
        return key

    def quota_refusal(self, owner: str, size: int) -> Deferred[str | None]:
        """Why ``size`` more bytes of ``owner``'s would go past a quota, or None (20.5)."""

        def check(used: list[int]) -> str | None:
            mine, everyone = used
            if mine + size > self.limits.account_quota:
                return f"your files would take more than {self.limits.account_quota} bytes"
            if everyone + size > self.limits.files_quota:
                return "the server keeps no more files: its quota is reached"
            return None

        return gatherResults(
            [self.records.used(owner), self.records.used_by_all()], consumeErrors=True
        ).addCallback(check)

    def begin_upload(self, id: int) -> bool:
        """Count an upload of session ``id`` under way on this node; False if
        it has its most already."""
        count = self._uploading.get(id, 0)
        if count >= self.limits.uploads_at_once:
            return False
        self._uploading[id] = count + 1
        return True

    def under_way(self, session: Session) -> int:
        """The session's uploads under way here (for the console and tests)."""
        return self._uploading.get(session.id, 0)

    def end_upload(self, id: int) -> None:
        count = self._uploading.pop(id, 1) - 1
        if count > 0:
            self._uploading[id] = count

    def keep(
        self,
        owner: str,
        room: str,
        name: str,
        kind: str,
        digest: str,
        size: int,
        path: str,
        width: int | None = None,
        height: int | None = None,
        thumb: tuple[str, str] | None = None,  # (digest, path)
    ) -> Deferred[StoredFile]:
        """Its record first, then its blobs: a removal of another upload of
        the same bytes, at the same time, then never deletes this one's
        blob (backends/files.py, FileRecords.remove)."""
        record = StoredFile(
            new_id(),
            digest,
            room,
            name,
            kind,
            size,
            owner,
            self.clock.seconds(),
            width,
            height,
            thumb[0] if thumb else None,
        )

        def put(_: None) -> Deferred[Any]:
            puts = [self.store.put(digest, path)]
            if thumb is not None:
                puts.append(self.store.put(*thumb))
            return gatherResults(puts, consumeErrors=True)

        def undo(failure: Failure) -> Deferred[Any]:
            return self.forget([record.id]).addBoth(lambda _: failure)

        d = self.records.add(record).addCallback(put)
        d.addErrback(undo)
        return d.addCallback(lambda _: record)

    # -- attaching and deleting ---------------------------------------------------------

    def attachable(self, session: Session, room: ChatRoom, ids: Sequence[str]) -> Deferred[list[codec.File]]:
        """The Files a SAY may attach, claimed for it; bad_file if any is
        not the session's (or its account's) unattached upload in this
        room, or there are too many (20.7)."""
        if len(ids) > self.limits.max_files:
            return _bad_file(f"a message carries at most {self.limits.max_files} files")
        if len(set(ids)) != len(ids) or any(i in self._claimed for i in ids):
            return _bad_file("a file can be attached once")
        owner = self.owner_of(session)

        def check(records: list[StoredFile | None]) -> list[codec.File]:
            for id, record in zip(ids, records, strict=True):
                if record is None or record.room != room.key or record.owner != owner:
                    raise ProtocolError(ErrorCode.BAD_FILE, f"{id!r} is not an upload of yours in this room")
                if record.seq is not None or id in self._claimed:
                    raise ProtocolError(ErrorCode.BAD_FILE, f"{id!r} is attached already")
            self._claimed.update(ids)
            return [file_of(r) for r in records if r is not None]

        d = gatherResults([self.records.get(i) for i in ids], consumeErrors=True)
        return d.addCallback(check)

    def attached(self, room: str, seq: int, files: list[codec.File]) -> None:
        """A message with files was stored: its uploads are its now."""
        ids = [f.id for f in files]
        d = self.records.attach(ids, room, seq)
        d.addErrback(lambda f: log.failure("files: could not attach {ids}", f, ids=ids))
        d.addBoth(lambda _: self._claimed.difference_update(ids))

    def unclaim(self, files: list[codec.File]) -> None:
        """A message with files was refused: its uploads may be attached again."""
        self._claimed.difference_update(f.id for f in files)

    def deleted(self, room: str, seq: int) -> None:
        """A message was deleted: its files go, then their blobs (20.5)."""
        d = self.records.of_message(room, seq)
        d.addCallback(lambda found: self.forget([r.id for r in found]))
        d.addErrback(lambda f: log.failure("files: could not delete message {seq}'s files", f, seq=seq))


def _seat_of(owner: str) -> tuple[int, str]:
    """Whom an IRC link's owner names, as the shared state is asked: an
    account by its nick key, a guest of a cluster (``~ID``) by its session id."""
    if owner.startswith("~"):
        digits = owner[1:]
        return (int(digits), "") if digits.isdigit() else (0, "")
    return 0, owner.rpartition(":")[0]


def _bad_file(message: str) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(ProtocolError(ErrorCode.BAD_FILE, message))
    return d
