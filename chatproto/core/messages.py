"""What is said: SAY, moderation records, WHISPER and HISTORY.

Messages go into the ordered broadcast; whispers and history pages wait
for everything broadcast before them (:meth:`Broadcast.after_all`), which
keeps each room's total order without a queue per connection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from time import perf_counter
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import codec
from chatproto.backends.eventlog import (
    ADMIN,
    DELETE,
    EDIT,
    NOBODY,
    OPERATOR,
    REACT,
    UNREACT,
    Change,
    Draft,
    EventLog,
    author_of,
)
from chatproto.codec import ErrorCode, Message, ProtocolError
from chatproto.core.assembly import Assembler
from chatproto.core.broadcast import Broadcast, Said
from chatproto.core.connection import Connection, Session, logged_in
from chatproto.core.conversations import Conversations
from chatproto.core.files import Files
from chatproto.core.membership import Membership
from chatproto.core.observers import Observers
from chatproto.core.peers import Peers
from chatproto.core.presence import stopped
from chatproto.core.registry import Registry
from chatproto.core.rooms import ChatRoom, Directory, changed
from chatproto.limits import Limits
from chatproto.metrics import Counters
from chatproto.rules import nick_key, normalise_nick, validate_emoji, validate_text

log = Logger()

#: Pages read at most for one version 1 HISTORY whose pages hold only deleted messages.
V1_READS = 10
#: The action of a notice (SAY with ``notice``): a message not to be answered.
NOTICE = {"op": codec.NOTICE}


class Messages:
    """Messages, whispers and history pages."""

    def __init__(
        self,
        clock: IReactorTime,
        limits: Limits,
        eventlog: EventLog,
        registry: Registry,
        directory: Directory,
        broadcast: Broadcast,
        assembler: Assembler,
        membership: Membership,
        peers: Peers,
        counters: Counters,
        observers: Observers,
        conversations: Conversations,
        drop_slow_consumers: Callable[[], None],
        files: Files | None = None,
    ) -> None:
        self.clock = clock
        self.limits = limits
        self.eventlog = eventlog
        self.registry = registry
        self.directory = directory
        self.broadcast = broadcast
        self.assembler = assembler
        self.membership = membership
        self.peers = peers
        self.counters = counters
        self.observers = observers
        self.conversations = conversations
        self.drop_slow_consumers = drop_slow_consumers  # after writing outside the broadcast
        self.files = files

    def say(
        self,
        connection: Connection,
        text: str,
        ref: str | None,
        room: str | None = None,
        reply: int | None = None,
        notice: bool | None = None,
        files: list[str] | None = None,
    ) -> Deferred[None] | None:
        session = logged_in(connection)
        # version 1 is always in the default room: no lookup for it
        target = (
            self.directory.default if session.version == 1 else self.membership.member_room(session, room)
        )
        if session.version != 1:  # version 1 knows no room rules (docs/protocol.md 15.5)
            _may_speak(session, target)
        if not files or text:  # with files, the text may be empty (20.1)
            validate_text(text, self.limits.max_text)
        author = session.owner or author_of(None, session.id, self.registry.epoch)
        # A notice (IRC's NOTICE) is a message that says so in its action, so
        # that it travels, is kept and is shown as every record is.
        action = NOTICE if notice and session.version >= 2 else None
        draft = Draft(self.clock.seconds(), session.nick, text, target.key, action, author, reply)
        if files and session.version >= 2:
            return self._say_with_files(connection, session, target, draft, files, ref)
        self.broadcast.message(draft, target.name, connection, ref)
        if session.typing:  # saying something is having stopped typing
            stopped(session, target.key)
        return None

    def _say_with_files(
        self,
        connection: Connection,
        session: Session,
        room: ChatRoom,
        draft: Draft,
        ids: list[str],
        ref: str | None,
    ) -> Deferred[None]:
        """A SAY with files takes its place in the room's order once its
        files are found to be the session's to attach (20.7)."""
        files = self.files
        if files is None:
            raise ProtocolError(ErrorCode.BAD_FILE, "this server keeps no files")

        def attach(found: list[codec.File]) -> None:
            if connection.session is not session or session.rooms.get(room.key) is not room:
                files.unclaim(found)  # it left the room while its files were looked up
                raise ProtocolError(ErrorCode.NOT_A_MEMBER, f"you are not in {room.name!r}: join it first")
            draft.files = found
            draft.ts = self.clock.seconds()
            self.broadcast.message(draft, room.name, connection, ref)
            if session.typing:
                stopped(session, room.key)

        return files.attachable(session, room, ids).addCallback(attach)

    def change(self, connection: Connection, packet: codec.Edit | codec.Delete | codec.React) -> None:
        """EDIT, DELETE or REACT: checked here as far as the request itself
        goes, then against the message by the log, in the room's order
        (docs/protocol.md 19.3-19.5)."""
        session = logged_in(connection)
        room = self.membership.member_room(session, packet.room)
        now = self.clock.seconds()
        author = session.owner or author_of(None, session.id, self.registry.epoch)
        if isinstance(packet, codec.Edit) or (isinstance(packet, codec.React) and packet.on is not False):
            _may_speak(session, room)  # taking one's own words or reaction back is always allowed
        if isinstance(packet, codec.Edit):
            validate_text(packet.text, self.limits.max_text)
            change = Change(EDIT, room.key, packet.seq, now, session.nick, author, text=packet.text)
            change.edit_window = self.limits.edit_window
        elif isinstance(packet, codec.Delete):
            rights = ADMIN if session.admin else NOBODY
            if rights == NOBODY and not room.direct and room.rules.is_op(session):
                rights = OPERATOR
            change = Change(DELETE, room.key, packet.seq, now, session.nick, author, rights=rights)
        else:
            validate_emoji(packet.emoji)
            kind = UNREACT if packet.on is False else REACT
            change = Change(kind, room.key, packet.seq, now, session.nick, author, emoji=packet.emoji)
            change.max_reactions = self.limits.max_reactions
            change.user_reactions = self.limits.user_reactions
        self.broadcast.message(change, room.name, connection, packet.ref)

    def stored(self, said: list[Said]) -> None:
        """What the log answered for a batch: each room's newest messages for
        its next joiner, a change in them; participants who left a direct
        conversation brought back by what was said in it. (A refused or
        unchanged item goes to its sender alone, in its place: Said.own.)"""
        rooms = self.directory.rooms
        for item in said:
            outcome = item.outcome
            if self.files is not None:
                self._files_of(item, outcome)
            if type(outcome) is Message:
                room = rooms.get(item.channel)
                if room is None:
                    continue
                if type(item.draft) is Draft:
                    room.recent.append((outcome, item.json))
                    room.last_seq = outcome.seq
                    if room.direct:
                        self.conversations.said(room)
                else:
                    changed(room, outcome, item.json)

    def _files_of(self, item: Said, outcome: Any) -> None:
        """A message's files are attached once it is stored, let go if it
        was refused, and deleted with it (20.5)."""
        assert self.files is not None
        draft = item.draft
        if type(draft) is Draft:
            if draft.files:
                if type(outcome) is Message:
                    self.files.attached(draft.room, outcome.seq, draft.files)
                else:
                    self.files.unclaim(draft.files)
        elif isinstance(draft, Change) and draft.kind == DELETE and type(outcome) is Message:
            self.files.deleted(draft.room, draft.seq)

    def record(
        self,
        room: ChatRoom,
        session: Session,
        connection: Connection | None,
        action: dict[str, Any],
        text: str,
        ref: str | None = None,
    ) -> None:
        """A moderation action, announced to the room and kept in its history
        as a MESSAGE from whoever did it, with ``action`` saying what."""
        draft = Draft(self.clock.seconds(), session.nick, text, room.key, action)
        self.broadcast.message(draft, room.name, connection, ref)
        self.observers.notify("moderation", session.id, nick=session.nick, room=room.name, reason=text)

    def whisper(self, connection: Connection, packet: codec.Whisper) -> Deferred[None]:
        """To every device of the one called ``to``, here or on another node."""
        session = logged_in(connection)
        validate_text(packet.text, self.limits.max_text)
        normalise_nick(packet.to)  # a malformed name is bad_nick, not no_such_nick
        target = self.registry.find(packet.to)
        if target is None:
            return self._whisper_elsewhere(connection, session, packet)
        notice = packet.notice or None
        private = codec.Private(self.clock.seconds(), session.nick, target.nick, packet.text, None, notice)
        found = target

        def send() -> None:
            # every device of both, the sender's own copy with its ref
            for device in {**found.devices, **session.devices}:
                if device.session is not None and device is not connection:
                    device.send(for_version(private, device.session.version))
            if connection.session is session:
                connection.send(
                    codec.Private(private.ts, private.sender, private.to, private.text, packet.ref, notice)
                )
            self.drop_slow_consumers()

        self.broadcast.after_all(send)
        return succeed(None)

    def _whisper_elsewhere(
        self, connection: Connection, session: Session, packet: codec.Whisper
    ) -> Deferred[None]:
        """To whoever has the nick on another node, through that node's
        inbox; the sender's copy once the store has taken it."""
        notice = packet.notice or None
        private = codec.Private(self.clock.seconds(), session.nick, packet.to, packet.text, None, notice)

        def sent(found: bool) -> None:
            if not found:
                raise ProtocolError(ErrorCode.NO_SUCH_NICK, f"nobody here is called {packet.to!r}")
            for device in session.devices:
                if device is not connection:
                    device.send(for_version(private, session.version))
            if connection.session is session:
                own = codec.Private(private.ts, private.sender, private.to, private.text, packet.ref, notice)
                connection.send(own)

        return self.peers.whisper(nick_key(normalise_nick(packet.to)), private).addCallback(sent)

    def whispered(self, private: codec.Private) -> None:
        """A whisper from a session on another node, to one of ours."""
        target = self.registry.find(private.to)
        if target is None:
            return  # gone meanwhile
        private = codec.Private(private.ts, private.sender, target.nick, private.text, None, private.notice)
        for device in target.devices:
            device.send(for_version(private, target.version))

    def history(self, connection: Connection, request: codec.HistoryRequest) -> Deferred[codec.HistoryPage]:
        """A HISTORY page of one of the session's rooms, after everything
        broadcast before the request."""
        session = logged_in(connection)
        given = [
            name
            for name in ("before", "after", "changed_after", "around")
            if getattr(request, name) is not None
        ]
        if len(given) > 1:
            raise ProtocolError(ErrorCode.BAD_PACKET, f"give one of {' or '.join(given)}, not both")
        room = self.membership.member_room(session, request.room)
        named = room.name if session.version >= 2 else None
        limit = min(max(request.limit if request.limit is not None else 50, 1), self.limits.history_page)
        answer: Deferred[codec.HistoryPage] = Deferred()

        def read() -> None:
            started = perf_counter()
            rev = None
            if request.around is not None:
                self._around(request.around, limit, room.key, named).chainDeferred(answer)
                return
            if request.changed_after is not None:
                d, keep = self.eventlog.changed_after(request.changed_after, limit, room.key), "oldest"
                rev = room.rev
            elif request.after is not None:
                d, keep = self.eventlog.after(request.after, limit, room.key), "oldest"
            else:
                d, keep = self.eventlog.before(request.before, limit, room.key), "newest"
            d.addCallback(self._timed_read, started)
            if session.version == 1:
                d.addCallback(self._visible, request, limit, room.key, V1_READS)
            page = d.addCallback(lambda page: self.assembler.page(page[0], page[1], keep, named, rev))
            page.chainDeferred(answer)

        self.broadcast.after_all(read)
        return answer

    def _around(self, seq: int, limit: int, room: str, named: str | None) -> Deferred[codec.HistoryPage]:
        """HISTORY ``around`` (docs/protocol.md 21.4): the page centred on a
        message, trimmed from its newest end to fit, saying whether newer
        ones exist."""

        def page(found: tuple[list[Message], bool, bool]) -> codec.HistoryPage:
            messages, older, newer = found
            fitted = self.assembler.page(messages, older, "oldest", named)
            trimmed = len(fitted.messages) < len(messages)
            return dataclasses.replace(fitted, more=older, newer=newer or trimmed)

        return self.eventlog.around(seq, limit, room).addCallback(page)

    def _visible(
        self,
        page: tuple[list[Message], bool],
        request: codec.HistoryRequest,
        limit: int,
        room: str,
        tries: int,
    ) -> Any:
        """A page as version 1 sees it; one whose every message was deleted
        reads on (a few pages at most), so that a version 1 client always
        has a seq to page from while ``more`` is true."""
        messages, more = page
        shown = as_version_1(messages, self.assembler.files_url)
        if shown or not more or not messages or tries <= 1:
            return shown, more
        if request.after is not None:
            d = self.eventlog.after(messages[-1].seq, limit, room)
        else:
            d = self.eventlog.before(messages[0].seq, limit, room)
        return d.addCallback(self._visible, request, limit, room, tries - 1)

    def _timed_read(self, page: Any, started: float) -> Any:
        self.counters.store["read"].observe(perf_counter() - started)
        return page

    def refused(self, said: list[Said], failure: Failure) -> None:
        """The log could not store a batch: nobody sees it, the senders are told."""
        log.error(
            "history store failed, {count} messages refused: {error}", count=len(said), error=failure.value
        )
        self.observers.notify("error", 0, reason=str(failure.value))
        for item in said:
            if self.files is not None and type(item.draft) is Draft and item.draft.files:
                self.files.unclaim(item.draft.files)
            if item.sender is not None and item.sender.session is not None:
                item.sender.send(
                    codec.Error(ErrorCode.INTERNAL, "the server could not store your message", item.ref)
                )


def _may_speak(session: Session, room: ChatRoom) -> None:
    """Who may, before what: a moderated room's members that are neither
    voiced nor operators post nothing (docs/protocol.md 15.5)."""
    if not room.rules.may_speak(session):
        raise ProtocolError(
            ErrorCode.MODERATED, f"{room.name!r} is moderated: only voiced members and operators may speak"
        )


def as_version_1(messages: list[Message], files_url: str = "") -> list[Message]:
    """A page as version 1 sees it (docs/protocol.md 19.10): deleted
    messages left out, the others' text alone (and their files' links, 20.6)."""
    return [m if m.plain else codec.v1_message(m, files_url) for m in messages if not m.deleted]


def for_version(private: codec.Private, version: int) -> codec.Private:
    """A PRIVATE as a session of ``version`` gets it: version 1 has no ``notice``."""
    if private.notice is None or version >= 2:
        return private
    return codec.Private(private.ts, private.sender, private.to, private.text, private.ref)
