"""The room: who is here, one total order of events, and broadcast.

Ordering rule: chat messages are batched per reactor turn, stored in one
transaction, then broadcast; every other event (login, leave, whisper,
history, pending) first flushes that batch. Delivery order therefore equals
event order for every recipient, with no per-event queue.
"""

from __future__ import annotations

import hmac
import itertools
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass(eq=False)
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
    message: Message
    sender: Session
    ref: str | None
    payload: bytes = field(default=b"")


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
        self._ids = itertools.count(1)
        self._open: dict[int, Client] = {}  # every accepted connection
        self._pending: dict[int, Client] = {}
        self._sessions: dict[int, Session] = {}
        self._nicks: dict[str, Session] = {}
        self._recipients: list[Outbox] = []
        self._overflowed: list[Client] = []
        self._next_seq = store.last_seq() + 1
        self._unsaved: list[_Said] = []
        self._flush_call: IDelayedCall | None = None
        self._recent: deque[Message] = deque(
            store.before(None, self.limits.history_replay)[0], maxlen=self.limits.history_replay
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
        self.flush()
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
        self._rebuild_recipients()
        client.send(self._welcome(session))
        self._broadcast(codec.Joined(session.id, nick), exclude=client.outbox)
        log.info("{nick} logged in as {id} from {address}", nick=nick, id=session.id, address=client.address)
        self._notify("joined", session.id, nick=nick, address=client.address)
        return session

    def _resume(self, client: Client, session: Session) -> Session:
        old = session.client
        del self._pending[client.id]
        old.session = None
        self._open.pop(old.id, None)
        old.disconnect("replaced")
        session.client = client
        session.token = secrets.token_urlsafe(24)
        session.since = self.clock.seconds()
        client.session = session
        self._rebuild_recipients()
        client.send(self._welcome(session))
        self._broadcast(codec.Pending(client.id, "gone"), exclude=client.outbox)
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
            self.flush()
            del self._sessions[session.id]
            del self._nicks[session.key]
            self._rebuild_recipients()
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
        self._unsaved.append(_Said(message, session, ref))
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)

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
        """Store the batch of said messages, then broadcast it."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        batch = self._unsaved
        if not batch:
            return
        self._unsaved = []
        try:
            self.store.append([said.message for said in batch])
        except StoreError as e:
            # Nobody saw these seqs, so they are reused; the senders are told.
            self._next_seq = batch[0].message.seq
            log.error("history store failed, {count} messages refused: {error}", count=len(batch), error=e)
            self._notify("error", 0, reason=str(e))
            for said in batch:
                if said.sender.client.session is said.sender:
                    said.sender.client.send(
                        codec.Error(ErrorCode.INTERNAL, "the server could not store your message", said.ref)
                    )
            return
        frames = []
        for said in batch:
            m = said.message
            said.payload = codec.encode_body(
                PacketType.MESSAGE, {"seq": m.seq, "ts": m.ts, "from": m.sender, "text": m.text}
            )
            frames.append(codec.frame(said.payload))
        shared = b"".join(frames)
        own = self._sender_copies(batch, frames)
        if own:
            for outbox in self._recipients:
                outbox.write(own.get(outbox, shared))
        else:
            for outbox in self._recipients:
                outbox.write(shared)
        self._recent.extend(said.message for said in batch)
        self._handle_overflow()

    @staticmethod
    def _sender_copies(batch: list[_Said], frames: list[bytes]) -> dict[Outbox, bytes]:
        """The batch as each sender with a ref sees it: its own copies carry the ref."""
        by_sender: dict[Outbox, list[bytes]] = {}
        for index, said in enumerate(batch):
            if said.ref is None:
                continue
            outbox = said.sender.client.outbox
            copy = by_sender.get(outbox)
            if copy is None:
                copy = by_sender[outbox] = list(frames)
            m = said.message
            copy[index] = codec.frame(
                codec.encode_body(
                    PacketType.MESSAGE,
                    {"seq": m.seq, "ts": m.ts, "from": m.sender, "text": m.text, "ref": said.ref},
                )
            )
        return {outbox: b"".join(copy) for outbox, copy in by_sender.items()}

    # -- broadcast ----------------------------------------------------------------

    def _rebuild_recipients(self) -> None:
        self._recipients = [s.client.outbox for s in self._sessions.values()]

    def _broadcast(self, packet, exclude: Outbox | None = None) -> None:
        self.flush()
        data = codec.encode_frame(packet)
        for outbox in self._recipients:
            if outbox is not exclude:
                outbox.write(data)
        self._handle_overflow()

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

    def _welcome(self, session: Session) -> codec.Welcome:
        history, _ = self._fit(list(self._recent), keep="newest")
        return codec.Welcome(
            nick=session.nick,
            id=session.id,
            resume=session.token,
            server=self.name,
            motd=self.motd,
            peers=[codec.Peer(s.id, s.nick) for s in self._sessions.values()],
            pending=list(self._pending),
            history=history,
            limits=self._limits_wire,
        )

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
        self._recipients = []
        closing = [client.closed() for client in clients]
        for client in clients:
            client.session = None
            client.disconnect("server_shutdown")
        log.info("shutting down: {count} connections closed", count=len(clients))
        done = DeferredList(closing, consumeErrors=True)
        timer = self.clock.callLater(grace, done.cancel)
        done.addBoth(lambda _: timer.cancel() if timer.active() else None)
        done.addBoth(lambda _: None)
        return done

    def close_store(self) -> None:
        self.store.close()
