"""The room: who is here, one total order of events, and broadcast.

Every broadcast (chat and presence alike) goes into one ordered batch per
reactor turn. At the end of the turn the batch's messages are stored in one
transaction, then the whole batch is joined into one bytes object and that
same object is written to every recipient: one write per recipient per turn,
however many events the turn had. A connection that logged in during the
turn starts at its own place in the batch; a sender gets its own messages
with their ``ref``. Whispers and history replies first flush the batch, so
they never overtake what was said before them.
"""

from __future__ import annotations

import hmac
import itertools
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from chatproto import codec
from chatproto.codec import ErrorCode, Message, PacketType, ProtocolError
from chatproto.limits import Limits
from chatproto.outbox import Outbox
from chatproto.rules import clean_reason, nick_key, normalise_nick, validate_text
from chatproto.store import HistoryStore, StoreError
from chatproto.timers import Timers

log = Logger()


class Client(Protocol):
    """What the room needs of a connection (chatproto.protocol.ChatProtocol)."""

    id: int
    address: str
    opened: float
    outbox: Outbox
    session: Session | None

    def send(self, packet) -> None: ...

    def disconnect(self, reason: str, *, flush: bool = True) -> None: ...

    def closed(self) -> Deferred: ...

    def abort(self) -> None: ...


@dataclass(eq=False, slots=True)
class Session:
    """A logged-in identity; survives its connection being replaced on resume."""

    id: int
    nick: str
    key: str
    token: str
    client: Client
    since: float


@dataclass(frozen=True)
class RoomEvent:
    """For observers such as the server console: what happened to whom."""

    kind: str  # pending, pending_gone, joined, left, resumed, error
    id: int
    nick: str | None = None
    address: str | None = None
    reason: str | None = None


@dataclass
class _Said:
    """A message in the batch, framed once it is stored."""

    message: Message
    sender: Session
    ref: str | None
    json: str = ""  # the MESSAGE body, encoded once stored


def _message_json(m: Message) -> str:
    return codec.dumps({"seq": m.seq, "ts": m.ts, "from": m.sender, "text": m.text})


def _peer_json(session: Session) -> str:
    return codec.dumps({"id": session.id, "nick": session.nick})


class Room:
    def __init__(
        self,
        store: HistoryStore,
        clock: IReactorTime,
        limits: Limits | None = None,
        name: str = "chat",
        motd: str = "",
    ) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits or Limits()
        self.name = name
        self.motd = motd
        self.observers: list[Callable[[RoomEvent], None]] = []
        self.timers = Timers(clock)  # every connection's deadlines
        self._ids = itertools.count(1)
        self._open: dict[int, Client] = {}  # every accepted connection
        self._pending: dict[int, Client] = {}
        self._sessions: dict[int, Session] = {}
        self._nicks: dict[str, Session] = {}
        self._outboxes: dict[int, Outbox] = {}  # session id -> where its broadcasts go
        self._peers: dict[int, str] = {}  # session id -> its JSON in WELCOME.peers
        self._overflowed: list[Client] = []
        self._next_seq = store.last_seq() + 1
        # The batch: frames (or messages, framed once stored) in event order,
        # and for connections that joined during it, where they start.
        self._batch: list[bytes | _Said] = []
        self._starts: dict[Outbox, int] = {}
        self._flush_call: IDelayedCall | None = None
        self._recent: deque[tuple[Message, str]] = deque(
            ((m, _message_json(m)) for m in store.before(None, self.limits.history_replay)[0]),
            maxlen=self.limits.history_replay,
        )
        self._limits_wire = self.limits.as_wire()

    # -- views for the console and tests ----------------------------------------

    @property
    def pending(self) -> list[Client]:
        return list(self._pending.values())

    @property
    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def session_for(self, nick: str) -> Session | None:
        return self._nicks.get(nick_key(nick))

    def _notify(self, kind: str, id: int, **fields) -> None:
        event = RoomEvent(kind, id, **fields)
        for observer in list(self.observers):
            try:
                observer(event)
            except Exception:
                log.failure("room observer failed on {event}", event=event)

    # -- connection lifecycle -----------------------------------------------------

    def accept(self, client: Client) -> bool:
        """Register a new connection as pending; False if the server is full."""
        if len(self._open) >= self.limits.max_clients:
            log.warn(
                "refused {address}: server full ({count} connections)",
                address=client.address,
                count=len(self._open),
            )
            return False
        client.id = next(self._ids)
        self._open[client.id] = client
        self._pending[client.id] = client
        self._broadcast(codec.Pending(client.id, "connecting"))
        self._notify("pending", client.id, address=client.address)
        return True

    def login(self, client: Client, packet: codec.Login) -> Session:
        if packet.proto != codec.PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"this server speaks protocol {codec.PROTOCOL_VERSION}, not {packet.proto}",
            )
        nick = normalise_nick(packet.nick)
        key = nick_key(nick)
        held = self._nicks.get(key)
        if held is not None:
            if packet.resume is None or not hmac.compare_digest(
                packet.resume.encode("utf-8"), held.token.encode("utf-8")
            ):
                raise ProtocolError(ErrorCode.NICK_TAKEN, f"nick {held.nick!r} is taken")
            return self._resume(client, held)
        del self._pending[client.id]
        session = Session(client.id, nick, key, secrets.token_urlsafe(24), client, self.clock.seconds())
        client.session = session
        self._sessions[session.id] = session
        self._nicks[key] = session
        self._broadcast(codec.Joined(session.id, nick))
        self._join(session, client)
        log.info("{nick} logged in as {id} from {address}", nick=nick, id=session.id, address=client.address)
        self._notify("joined", session.id, nick=nick, address=client.address)
        return session

    def _resume(self, client: Client, session: Session) -> Session:
        old = session.client
        del self._pending[client.id]
        self._leave_recipients(session)
        old.session = None
        self._open.pop(old.id, None)
        old.disconnect("replaced")
        session.client = client
        session.token = secrets.token_urlsafe(24)
        session.since = self.clock.seconds()
        client.session = session
        self._broadcast(codec.Pending(client.id, "gone"))
        self._join(session, client)
        log.info(
            "{nick} ({id}) resumed from {address}", nick=session.nick, id=session.id, address=client.address
        )
        self._notify("resumed", session.id, nick=session.nick, address=client.address)
        return session

    def leave(self, client: Client, reason: str, message: str | None = None) -> None:
        """The connection is gone or going: announce it once, forget it."""
        if self._open.pop(client.id, None) is None:
            return
        session = client.session
        if session is not None:
            client.session = None
            del self._sessions[session.id]
            del self._nicks[session.key]
            self._leave_recipients(session)
            message = clean_reason(message, self.limits.max_text)
            self._broadcast(codec.Left(session.id, session.nick, reason, message))
            log.info("{nick} ({id}) left: {reason}", nick=session.nick, id=session.id, reason=reason)
            self._notify("left", session.id, nick=session.nick, reason=reason)
        elif self._pending.pop(client.id, None) is not None:
            self._broadcast(codec.Pending(client.id, "gone"))
            self._notify("pending_gone", client.id, reason=reason)

    def kick(self, id: int) -> bool:
        """Disconnect a connected session or a pending connection by id."""
        session = self._sessions.get(id)
        client = session.client if session is not None else self._pending.get(id)
        if client is None:
            return False
        self.leave(client, "kicked")
        client.disconnect("kicked")
        return True

    # -- chat -------------------------------------------------------------------

    def say(self, session: Session, text: str, ref: str | None) -> None:
        validate_text(text, self.limits.max_text)
        message = Message(self._next_seq, self.clock.seconds(), session.nick, text)
        self._next_seq += 1
        self._append(_Said(message, session, ref))

    def whisper(self, session: Session, packet: codec.Whisper) -> None:
        validate_text(packet.text, self.limits.max_text)
        normalise_nick(packet.to)  # a malformed name is bad_nick, not no_such_nick
        target = self._nicks.get(nick_key(packet.to))
        if target is None:
            raise ProtocolError(ErrorCode.NO_SUCH_NICK, f"nobody here is called {packet.to!r}")
        self.flush()
        private = codec.Private(self.clock.seconds(), session.nick, target.nick, packet.text)
        if target is not session:
            target.client.send(private)
        session.client.send(codec.Private(private.ts, session.nick, target.nick, packet.text, packet.ref))
        self._handle_overflow()

    def history(self, request: codec.HistoryRequest) -> codec.HistoryPage:
        if request.before is not None and request.after is not None:
            raise ProtocolError(ErrorCode.BAD_PACKET, "give either 'before' or 'after', not both")
        limit = min(max(request.limit if request.limit is not None else 50, 1), self.limits.history_page)
        self.flush()
        if request.after is not None:
            messages, more = self.store.after(request.after, limit)
            messages, trimmed = self._fit(messages, keep="oldest")
        else:
            messages, more = self.store.before(request.before, limit)
            messages, trimmed = self._fit(messages, keep="newest")
        return codec.HistoryPage(messages, more or trimmed)

    def flush(self) -> None:
        """Store the batch's messages, then write the batch to every recipient."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        batch, starts = self._batch, self._starts
        if not batch:
            return
        self._batch, self._starts = [], {}
        said = [item for item in batch if type(item) is _Said]
        if said and not self._store(said):
            # Refused messages become empty frames, so positions in the batch hold.
            batch = [b"" if type(item) is _Said else item for item in batch]
        frames = [item if type(item) is bytes else self._frame(item) for item in batch]
        shared = b"".join(frames)
        special = self._special_copies(batch, frames, starts)
        if special:
            for outbox in self._outboxes.values():
                outbox.write(special.get(outbox, shared))
        else:
            for outbox in self._outboxes.values():
                outbox.write(shared)
        self._handle_overflow()

    def _store(self, said: list[_Said]) -> bool:
        try:
            self.store.append([item.message for item in said])
        except StoreError as e:
            # Nobody saw these seqs, so they are reused; the senders are told.
            self._next_seq = said[0].message.seq
            log.error("history store failed, {count} messages refused: {error}", count=len(said), error=e)
            self._notify("error", 0, reason=str(e))
            for item in said:
                if item.sender.client.session is item.sender:
                    item.sender.client.send(
                        codec.Error(ErrorCode.INTERNAL, "the server could not store your message", item.ref)
                    )
            return False
        return True

    def _frame(self, said: _Said) -> bytes:
        said.json = _message_json(said.message)
        self._recent.append((said.message, said.json))
        return codec.frame(codec.encode_json(PacketType.MESSAGE, said.json))

    def _special_copies(self, batch: list, frames: list[bytes], starts: dict[Outbox, int]) -> dict:
        """The batch as seen by those who don't get the shared copy: senders
        (their own messages carry the ref) and those who joined mid-batch.

        A mid-batch joiner's WELCOME reflects the presence events before its
        start but its history stops at the last flush, so it gets the batch's
        earlier messages and everything from its start on."""
        copies: dict[Outbox, list[bytes]] = {}
        for index, item in enumerate(batch):
            if type(item) is _Said and item.ref is not None:
                outbox = item.sender.client.outbox
                copy = copies.get(outbox)
                if copy is None:
                    copy = copies[outbox] = list(frames)
                # The same body, encoded once, with the ref spliced in.
                with_ref = f'{item.json[:-1]},"ref":{codec.dumps(item.ref)}}}'
                copy[index] = codec.frame(codec.encode_json(PacketType.MESSAGE, with_ref))

        def view(own: list[bytes], start: int) -> bytes:
            earlier = [own[i] for i in range(start) if type(batch[i]) is _Said]
            return b"".join(earlier + own[start:])

        result = {outbox: view(copy, starts.get(outbox, 0)) for outbox, copy in copies.items()}
        for outbox, start in starts.items():
            if outbox not in result:
                result[outbox] = view(frames, start)
        return result

    # -- broadcast ----------------------------------------------------------------

    def _append(self, item: bytes | _Said) -> None:
        self._batch.append(item)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)

    def _broadcast(self, packet) -> None:
        self._append(codec.encode_frame(packet))

    def _join(self, session: Session, client: Client) -> None:
        """WELCOME now; broadcasts from this point of the batch on."""
        self._peers[session.id] = _peer_json(session)  # WELCOME.peers includes you
        client.outbox.write(codec.frame(self._welcome(session)))
        self._outboxes[session.id] = client.outbox
        if self._batch:
            self._starts[client.outbox] = len(self._batch)

    def _leave_recipients(self, session: Session) -> None:
        outbox = self._outboxes.pop(session.id, None)
        self._peers.pop(session.id, None)
        self._starts.pop(outbox, None)

    def overflowed(self, client: Client) -> None:
        """Called by a client's Outbox past sendq; handled once the write loop ends."""
        self._overflowed.append(client)

    def _handle_overflow(self) -> None:
        while self._overflowed:
            client = self._overflowed.pop()
            log.warn("{id} is not reading: disconnected as slow consumer", id=client.id)
            self.leave(client, "slow_consumer")
            client.disconnect("slow_consumer", flush=False)

    # -- packets ----------------------------------------------------------------

    def _welcome(self, session: Session) -> bytes:
        """WELCOME's payload, spliced from cached JSON: a login costs a join
        over the peers, not an encode of every one of them."""
        recent = list(self._recent)
        history, _ = self._fit([m for m, _ in recent], keep="newest")
        history_json = [text for _, text in recent[len(recent) - len(history) :]]
        body = {
            "nick": session.nick,
            "id": session.id,
            "resume": session.token,
            "server": self.name,
            "motd": self.motd,
            "pending": list(self._pending),
            "limits": self._limits_wire,
        }
        peers = ",".join(self._peers.values())
        raw = {"peers": f"[{peers}]", "history": "[" + ",".join(history_json) + "]"}
        return codec.encode_body(PacketType.WELCOME, body, raw)

    def _fit(self, messages: list[Message], keep: str) -> tuple[list[Message], bool]:
        """Drop messages from the far end until the list encodes within
        max_frame (with room for the rest of the packet): a client may use
        WELCOME.limits.max_frame as its own bound."""
        budget = self.limits.max_frame - 1024
        # UTF-8 needs at most 4 bytes a character; most pages pass this bound.
        if sum(4 * (len(m.text) + len(m.sender)) + 100 for m in messages) <= budget:
            return messages, False
        sizes = [len(codec.encode(codec.MessagePacket(m.seq, m.ts, m.sender, m.text))) for m in messages]
        total = sum(sizes) + len(sizes)
        if total <= budget:
            return messages, False
        order = range(len(messages)) if keep == "newest" else range(len(messages) - 1, -1, -1)
        cut = 0
        for index in order:
            if total <= budget:
                break
            total -= sizes[index] + 1
            cut += 1
        kept = messages[cut:] if keep == "newest" else messages[: len(messages) - cut]
        return kept, True

    # -- shutdown -----------------------------------------------------------------

    def shutdown(self, grace: float = 5.0) -> Deferred:
        """BYE server_shutdown to everyone, after storing what was said; fires
        when every connection is closed (or ``grace`` has passed)."""
        self.flush()
        clients = list(self._open.values())
        self._open.clear()
        self._pending.clear()
        self._sessions.clear()
        self._nicks.clear()
        self._outboxes.clear()
        self._peers.clear()
        closing = [client.closed() for client in clients]
        for client in clients:
            client.session = None
            client.disconnect("server_shutdown")
        log.info("shutting down: {count} connections closed", count=len(clients))
        done = DeferredList(closing, consumeErrors=True)

        def abort_stragglers() -> None:
            for client in clients:  # peers that didn't read their BYE in time
                client.abort()

        timer = self.clock.callLater(grace, abort_stragglers)
        done.addBoth(lambda _: timer.cancel() if timer.active() else None)
        done.addBoth(lambda _: None)
        return done

    def close_store(self) -> None:
        self.store.close()
