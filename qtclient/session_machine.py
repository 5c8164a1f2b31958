"""The chat session as a state machine, with no Qt in it.

One chat identity kept connected by a ClientService. Its states and every
transition between them are in :data:`TRANSITIONS`; packets are dispatched
through a table keyed by packet class, and acted on only from the current
link and only once LOGIN has been sent on it, so an untrusted or replaced
link is never listened to. What happens is reported to a
:class:`SessionEvents` (the Qt adapter turns each call into a signal).

It speaks protocol version 2: it keeps the rooms the user is in (the
server's default room to begin with), each with its own seqs.

Coming back after a drop: reconnect with backoff, log in with the resume
token, join each room again, fill each room's gap with HISTORY ``after``,
and re-send or confirm what was typed while the link was down.
"""

from __future__ import annotations

import enum
import itertools
import random
from collections import deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field

from OpenSSL import SSL
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from chatproto import codec
from chatproto.client import ChatClientProtocol
from chatproto.codec import ErrorCode
from chatproto.rules import room_key
from chatproto.tls import PIN, TLSSettings, fingerprint_of

log = Logger()


class State(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    TLS_CHECK = "checking the certificate"
    LOGGING_IN = "logging in"
    CATCHING_UP = "catching up"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    GIVEN_UP = "given up"


S = State
_ACTIVE = (S.CONNECTING, S.TLS_CHECK, S.LOGGING_IN, S.CATCHING_UP, S.CONNECTED, S.RECONNECTING)
_LINKED = (S.TLS_CHECK, S.LOGGING_IN, S.CATCHING_UP, S.CONNECTED)

#: (state, event) -> next state: every transition the session makes.
TRANSITIONS: dict[tuple[State, str], State] = {
    **{(state, "connect"): S.CONNECTING for state in State},
    **{(state, "disconnect"): S.DISCONNECTED for state in State},
    **{(state, "give_up"): S.GIVEN_UP for state in _ACTIVE},
    **{(state, "plain_link"): S.LOGGING_IN for state in (S.CONNECTING, S.RECONNECTING)},
    **{(state, "tls_link"): S.TLS_CHECK for state in (S.CONNECTING, S.RECONNECTING)},
    (S.TLS_CHECK, "trusted"): S.LOGGING_IN,
    (S.LOGGING_IN, "welcome"): S.CONNECTED,
    (S.LOGGING_IN, "welcome_with_gap"): S.CATCHING_UP,
    (S.CATCHING_UP, "caught_up"): S.CONNECTED,
    **{(state, "link_lost"): S.RECONNECTING for state in _LINKED},
    **{(state, "retry_scheduled"): S.RECONNECTING for state in (S.CONNECTING, S.RECONNECTING)},
}

#: Packets are acted on only in these states (LOGIN has been sent on the link).
_LISTENING = (S.LOGGING_IN, S.CATCHING_UP, S.CONNECTED)

#: Messages typed while offline that wait for the link; more are refused.
MAX_QUEUED = 200
PING_EVERY = 15.0
CATCH_UP_PAGE = 200
#: BYE reasons after which reconnecting would be wrong.
_FINAL_BYES = {"kicked", "replaced", "too_many_attempts"}
_FINAL_ERRORS = {
    ErrorCode.BAD_NICK,
    ErrorCode.NICK_TAKEN,
    ErrorCode.UNSUPPORTED_VERSION,
    ErrorCode.NICK_REGISTERED,
    ErrorCode.BAD_PASSWORD,
    ErrorCode.LOCKED_OUT,
    ErrorCode.BANNED,
}


#: A token this close to its expiry is renewed first: an upload starting now may take a while.
TOKEN_MARGIN = 60.0
#: HISTORY around a search hit: this many messages about it.
AROUND_PAGE = 50


class FilesUnavailable(Exception):
    """No upload token to be had: offline, or the server has no files (``code``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def retry_policy(initial: float = 1.0, cap: float = 30.0):
    """1 s doubling to 30 s, plus up to a second of jitter."""
    return backoffPolicy(initialDelay=initial, maxDelay=cap, factor=2.0, jitter=random.random)


class SessionEvents:
    """What a session reports; every method does nothing here. The Qt
    adapter (qtclient.session) emits a signal for each."""

    def state_changed(self, state: State, detail: str) -> None: ...
    def reconnect_scheduled(self, delay: float) -> None: ...
    def welcome_received(self, welcome: codec.Welcome) -> None: ...
    def room_joined(self, state: codec.RoomState, reset: bool) -> None: ...
    def room_left(self, left: codec.Left) -> None: ...
    def topic_changed(self, topic: codec.TopicChanged) -> None: ...
    def rooms_listed(self, rooms: list[codec.RoomInfo]) -> None: ...
    def message_received(self, message: codec.MessagePacket) -> None: ...
    def history_received(
        self, room: str, messages: list[codec.Message], more: bool, direction: str
    ) -> None: ...
    def private_received(self, private: codec.Private) -> None: ...
    def peer_joined(self, joined: codec.Joined) -> None: ...
    def peer_left(self, left: codec.Left) -> None: ...
    def pending_changed(self, pending: codec.Pending) -> None: ...
    def send_queued(self, ref: str, packet) -> None: ...
    def send_confirmed(self, ref: str, seq: int) -> None: ...
    def send_failed(self, ref: str, why: str) -> None: ...
    def error_received(self, code: str, message: str) -> None: ...
    def rtt_measured(self, rtt: float) -> None: ...
    def certificate_unknown(self, where: str, fingerprint: str) -> None: ...
    def connection_lost(self) -> None: ...
    def back_online(self, missed: int) -> None: ...
    def marked(self, marked: codec.Marked) -> None: ...
    def done(self, done: codec.Done) -> None: ...
    def bans_listed(self, bans: codec.BanList) -> None: ...
    def sessions_listed(self, sessions: codec.Sessions) -> None: ...
    def invited(self, invited: codec.Invited) -> None: ...
    def message_changed(self, room: str, message: codec.Message, kind: str, by: str) -> None: ...
    def typing_changed(self, room: str, nicks: list[str]) -> None: ...
    def status_changed(self, status: codec.Status) -> None: ...
    def key_needed(self, room: str, message: str) -> None: ...
    def renamed(self, renamed: codec.Renamed) -> None: ...
    def results_received(self, ref: str, query: codec.Search, results: codec.Results) -> None: ...
    def search_failed(self, ref: str, code: str, message: str) -> None: ...
    def history_around(self, room: str, seq: int, messages: list[codec.Message], more: bool) -> None: ...
    def count_changed(self, room: str, count: int) -> None: ...
    def room_turned_big(self, room: str, count: int) -> None: ...
    def members_received(self, ref: str, page: codec.Members, prefix: str | None) -> None: ...
    def members_failed(self, ref: str, room: str, code: str, message: str) -> None: ...


@dataclass
class RoomTrack:
    """A room the user is in: where its order stands for this client."""

    name: str
    last_seq: int = 0
    oldest_seq: int | None = None
    older_requested: bool = False
    seq_at_drop: int = 0
    joined: bool = False  # its ROOM came on the current link
    kind: str | None = None  # "direct" for a direct conversation
    rev: int | None = None  # the highest rev seen (None: no ROOM yet)
    changes_fetching: bool = False  # HISTORY changed_after pages under way
    #: What each HISTORY page still to come answers, in order: "before", or the seq it is around.
    awaiting: deque[str | int] = field(default_factory=deque)
    count: int = 0  # how many members it has: ROOM's count, then COUNT, or JOINED and LEFT in a small room
    lazy: bool = False  # a big room (22): its ROOM listed the shown members only


def direct_participants(name: str) -> list[str]:
    """The account names in a direct conversation's name (``@alice+bob``)."""
    return [part for part in name[1:].split("+") if part] if name.startswith("@") else []


class TypingTracker:
    """Who is typing where, each notice expiring by itself after ``2 ×
    interval`` seconds (19.6); ``report(room, nicks)`` on every change."""

    def __init__(self, clock, report: Callable[[str, list[str]], None]) -> None:
        self.clock = clock
        self.report = report
        self.interval = 3.0
        self._rooms: dict[str, dict[str, object]] = {}  # room key -> nick -> its DelayedCall
        self._names: dict[str, str] = {}

    def typing(self, room: str, nick: str) -> None:
        key = room_key(room)
        self._names[key] = room
        typers = self._rooms.setdefault(key, {})
        call = typers.pop(nick, None)
        if call is not None and call.active():
            call.cancel()
        typers[nick] = self.clock.callLater(2 * self.interval, self.stopped, room, nick)
        self.report(room, list(typers))

    def stopped(self, room: str, nick: str) -> None:
        typers = self._rooms.get(room_key(room), {})
        call = typers.pop(nick, None)
        if call is None:
            return
        if call.active():
            call.cancel()
        self.report(self._names.get(room_key(room), room), list(typers))

    def nicks(self, room: str) -> list[str]:
        return list(self._rooms.get(room_key(room), {}))

    def clear(self) -> None:
        rooms, self._rooms = self._rooms, {}
        for key, typers in rooms.items():
            for call in typers.values():
                if call.active():
                    call.cancel()
            if typers:
                self.report(self._names.get(key, key), [])


@dataclass
class Outgoing:
    ref: str
    packet: object  # codec.Say or codec.Whisper
    sent: bool = False
    failed: bool = False  # refused by the server: waits for the user to retry


@implementer(IHandshakeListener)
class Link(ChatClientProtocol):
    """One connection attempt's protocol; reports to its session with itself,
    so the session can tell the current link from a replaced one."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session

    def connectionMade(self) -> None:
        self.session._link_made(self)

    def handshakeCompleted(self) -> None:  # TLS only
        self.session._handshake_done(self)

    def packetReceived(self, packet) -> None:
        self.session._packet(self, packet)

    def connectionLost(self, reason) -> None:
        self.session._link_lost(self, reason)


class _ReportingEndpoint:
    """Passes connection failures to the session so the UI can say why."""

    def __init__(self, endpoint, on_failure: Callable[[str], None]) -> None:
        self.endpoint = endpoint
        self.on_failure = on_failure

    def connect(self, factory) -> Deferred:
        d = self.endpoint.connect(factory)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure):
        self.on_failure(failure.getErrorMessage())
        return failure


def tcp_endpoint(reactor, host: str, port: int, tls: TLSSettings | None):
    """The real network: HostnameEndpoint, wrapped in TLS if asked."""
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

    from chatproto.tls import creator_for

    endpoint = HostnameEndpoint(reactor, host, port, timeout=10)
    return wrapClientTLS(creator_for(host, tls), endpoint) if tls is not None else endpoint


class ClientSession:
    def __init__(self, reactor, events: SessionEvents | None = None, retry=None, endpoint_for=None) -> None:
        self.reactor = reactor
        self.events = events or SessionEvents()
        self.state = S.DISCONNECTED
        self.nick: str | None = None
        self.my_id: int | None = None
        self.server = ""  # the name the server gave in WELCOME
        self.limits: dict = {}
        self.default_room = "general"
        self.rooms: dict[str, RoomTrack] = {}  # by room key, in joining order
        self._catching: set[str] = set()  # rooms whose gap is being fetched
        self.link: Link | None = None
        self._retry = retry or retry_policy()
        self._endpoint_for = endpoint_for or (lambda host, port, tls: tcp_endpoint(reactor, host, port, tls))
        self._service: ClientService | None = None
        self._stopping: Deferred | None = None
        self._token: str | None = None
        self._password: str | None = None  # in memory only, for logging in again
        self._new_password: str | None = None  # asked for, not yet confirmed
        self._register = False  # register the nick once logged in as a guest
        self.account = False  # logged in to an account
        self.admin = False
        self._refs = (f"c{n}" for n in itertools.count(1))
        self._outgoing: dict[str, Outgoing] = {}  # in typing order
        self._queued: deque[str] = deque()
        self._final_reason: str | None = None
        self._outage = False  # a logged-in link dropped; cleared when back
        self._missed = 0  # messages newer than each room's last seq, fetched since the drop
        self._pings: dict[str, float] = {}
        self._ping_tokens = itertools.count(1)
        self._pinger = LoopingCall(self._ping)
        self._pinger.clock = reactor
        self._tls: TLSSettings | None = None
        self._pins: MutableMapping[str, str] = {}
        self._where = ""
        self._unknown_fingerprint: str | None = None  # awaiting the user's trust
        self.away: str | None = None  # our away message while away ("" for none)
        self._away_asked: str | None = None
        self.typers = TypingTracker(reactor, lambda room, nicks: self.events.typing_changed(room, nicks))
        self._typing_sent: dict[str, float] = {}  # room key -> when TYPING true last went
        self._opening: dict[str, tuple[str, str]] = {}  # OPEN ref -> (whom, the text to say there)
        self._room_keys: dict[str, str] = {}  # room key -> the key (+k) it is joined with again
        self._open_refs = (f"open:{n}" for n in itertools.count(1))
        self._files_token: codec.FilesToken | None = None  # the newest FILES_TOKEN of this link
        self._token_waiters: list[Deferred[codec.FilesToken]] = []
        self._search_refs = (f"search:{n}" for n in itertools.count(1))
        self._searches: dict[str, codec.Search] = {}  # ref -> the SEARCH awaiting its RESULTS
        self._member_refs = (f"members:{n}" for n in itertools.count(1))
        #: MEMBERS ref -> (room, prefix) awaiting its page; cleared with the link.
        self._member_asks: dict[str, tuple[str, str | None]] = {}

    # -- the machine ----------------------------------------------------------------

    def _fire(self, event: str, detail: str = "") -> None:
        """Take the transition for ``event``; one not in TRANSITIONS is a bug."""
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise RuntimeError(f"no transition for {event!r} in state {self.state.name}") from None
        self.events.state_changed(self.state, detail)

    @property
    def logged_in(self) -> bool:
        return self.state in (S.CATCHING_UP, S.CONNECTED)

    # -- what the user asks ------------------------------------------------------------

    def connect_to(
        self,
        host: str,
        port: int,
        nick: str,
        tls: TLSSettings | None = None,
        pins: MutableMapping[str, str] | None = None,
        password: str | None = None,
        register: bool = False,
    ) -> None:
        """Start keeping a connection to host:port logged in as ``nick``; over
        TLS if ``tls`` is given (``pins``: host:port -> trusted fingerprint).
        With a ``password``, as the account (``register``: make the nick one
        first, logging in as a guest)."""
        if self._service is not None:
            self._stop_service()
        if nick != self.nick:
            self._token = None
            self.rooms.clear()
        self.nick = nick
        self._password = password or None
        self._register = bool(register and password)
        self._final_reason = None
        self._outage = False
        self._tls, self._where = tls, f"{host}:{port}"
        if pins is not None:
            self._pins = pins
        endpoint = _ReportingEndpoint(self._endpoint_for(host, port, tls), self._unreachable)
        factory = Factory.forProtocol(lambda: Link(self))
        self._service = ClientService(
            endpoint, factory, retryPolicy=self._announcing_retry, clock=self.reactor
        )
        self._fire("connect", self._where)
        self._service.startService()

    def disconnect(self) -> Deferred:
        """QUIT and stop reconnecting; fires when the connection is closed."""
        if self.link is not None and self.logged_in:
            self.link.send(codec.Quit("leaving"))
        d = self._stop_service()
        self._fire("disconnect")
        return d

    def say(
        self, text: str, room: str | None = None, reply: int | None = None, files: list[str] | None = None
    ) -> str | None:
        """Say ``text`` in ``room`` (the default room if None); ``reply``: the
        seq of the message it answers; ``files``: ids of uploads it carries
        (then ``text`` may be empty). Saying says the typing stopped."""
        room = room or self.default_room
        self._typing_sent.pop(room_key(room), None)
        return self._submit(lambda ref: codec.Say(text, ref, room, reply, files=files or None))

    # -- files and search (sections 20, 21) -------------------------------------------

    def files_token(self, fresh: bool = False) -> Deferred[codec.FilesToken]:
        """A token for HTTP uploads and downloads: the one kept while it has
        time left, else a new one asked with FILES (``fresh``: a new one in
        any case, after an HTTP 401). Fails with FilesUnavailable."""
        token = self._files_token
        if not fresh and token is not None and token.expires - TOKEN_MARGIN > self.reactor.seconds():
            return succeed(token)
        if not self.logged_in or self.link is None:
            return fail(FilesUnavailable("offline", "not connected: share files when the connection is back"))
        d: Deferred[codec.FilesToken] = Deferred()
        self._token_waiters.append(d)
        if len(self._token_waiters) == 1:  # one FILES answers every caller waiting
            self.link.send(codec.Files(ref="files"))
        return d

    def _on_files_token(self, token: codec.FilesToken) -> None:
        self._files_token = token
        waiters, self._token_waiters = self._token_waiters, []
        for d in waiters:
            d.callback(token)

    def _no_token(self, code: str, message: str) -> None:
        waiters, self._token_waiters = self._token_waiters, []
        for d in waiters:
            d.errback(FilesUnavailable(code, message))

    def search(
        self,
        words: str,
        room: str | None = None,
        sender: str | None = None,
        page: str | None = None,
        limit: int | None = None,
    ) -> str | None:
        """SEARCH the messages of our rooms (``room``: that one only; ``sender``:
        said by that nick; ``page``: the next page of an earlier search).
        Returns the ref RESULTS or a refusal will carry."""
        ref = next(self._search_refs)
        query = codec.Search(words, room or None, sender or None, page=page, limit=limit, ref=ref)
        if not self._request(query):
            return None
        self._searches[ref] = query
        return ref

    # -- big rooms (section 22) -----------------------------------------------------------

    def members(
        self, room: str, after: str | None = None, prefix: str | None = None, limit: int | None = None
    ) -> str | None:
        """MEMBERS: a page of ``room``'s members in folded-nick order, after
        the member whose key is ``after`` (a page's ``next``), only those
        whose nick starts with ``prefix`` if given. Returns the ref that
        members_received (or members_failed) carries; None if offline."""
        track = self.rooms.get(room_key(room))
        if track is None or not self.logged_in or self.link is None:
            return None
        ref = next(self._member_refs)
        self._member_asks[ref] = (track.name, prefix)
        self.link.send(codec.MembersRequest(track.name, after, prefix, limit, ref))
        return ref

    def follow(self, room: str, nicks: list[str]) -> bool:
        """FOLLOW: be told when these nicks join or leave a big room (someone
        the user is about to talk to, or has open); its MEMBERS answer is
        reported like any page's."""
        track = self.rooms.get(room_key(room))
        if track is None or not track.lazy or not nicks or not self.logged_in or self.link is None:
            return False
        ref = next(self._member_refs)
        self._member_asks[ref] = (track.name, None)
        self.link.send(codec.Follow(track.name, list(nicks), ref))
        return True

    def count_of(self, room: str) -> int:
        track = self.rooms.get(room_key(room))
        return track.count if track is not None else 0

    def is_lazy(self, room: str) -> bool:
        track = self.rooms.get(room_key(room))
        return track is not None and track.lazy

    def _set_count(self, track: RoomTrack, count: int) -> None:
        if count != track.count:
            track.count = count
            self.events.count_changed(track.name, count)

    def _on_members_page(self, page: codec.Members) -> None:
        asked = self._member_asks.pop(page.ref or "", None)
        track = self.rooms.get(room_key(page.room))
        if track is None or asked is None or page.ref is None:
            return  # not ours, or a room left since
        if track.lazy:  # a small room's count follows JOINED and LEFT, one at a time
            self._set_count(track, page.count)
        self.events.members_received(page.ref, page, asked[1])

    def _on_count(self, count: codec.Count) -> None:
        track = self.rooms.get(room_key(count.room))
        if track is not None:
            # A room's first COUNT is how a member learns that it turned big
            # (docs/protocol.md 22.2): its count comes in COUNT from then on.
            if not track.lazy:
                track.lazy, track.count = True, count.members
                self.events.room_turned_big(track.name, count.members)
            self._set_count(track, count.members)

    def _on_results(self, results: codec.Results) -> None:
        query = self._searches.pop(results.ref or "", None)
        if query is not None and results.ref is not None:
            self.events.results_received(results.ref, query, results)

    def open_around(self, room: str, seq: int, limit: int = AROUND_PAGE) -> bool:
        """HISTORY around ``seq`` of ``room`` (a search hit): history_around
        answers with the page. False if we are not in the room or offline."""
        track = self.rooms.get(room_key(room))
        if track is None or not self.logged_in or self.link is None:
            return False
        track.awaiting.append(seq)
        self.link.send(codec.HistoryRequest(limit=limit, room=track.name, around=seq))
        return True

    # -- conversations (section 19) ---------------------------------------------------

    def edit(self, room: str, seq: int, text: str) -> bool:
        """Replace the text of our message ``seq``; CHANGED answers."""
        return self._request(codec.Edit(room, seq, text, ref=f"edit:{seq}"))

    def delete(self, room: str, seq: int) -> bool:
        return self._request(codec.Delete(room, seq, ref=f"delete:{seq}"))

    def react(self, room: str, seq: int, emoji: str, on: bool = True) -> bool:
        """Add (or, ``on`` False, take back) our reaction ``emoji``."""
        return self._request(codec.React(room, seq, emoji, None if on else False, ref=f"react:{seq}"))

    def my_reaction(self, message, emoji: str) -> bool:
        """Whether ``emoji`` on ``message`` (a Message or a model's line) is ours."""
        mine = room_key(self.nick or "")
        for reaction in getattr(message, "reactions", None) or ():
            if reaction.emoji == emoji:
                return any(room_key(nick) == mine for nick in reaction.by)
        return False

    def typing_interval(self) -> float:
        value = self.limits.get("typing_interval", 3)
        return float(value) if isinstance(value, (int, float)) and value > 0 else 3.0

    def typing(self, room: str, typing: bool = True) -> bool:
        """The user is typing in ``room`` (or cleared the input): TYPING true
        at most once every typing_interval, false only after a true. Whether
        a packet went."""
        if not self.logged_in or self.link is None:
            return False
        key = room_key(room)
        now = self.reactor.seconds()
        if typing:
            last = self._typing_sent.get(key)
            if last is not None and now - last < self.typing_interval():
                return False
            self._typing_sent[key] = now
            self.link.send(codec.Typing(room))
            return True
        if self._typing_sent.pop(key, None) is None:
            return False
        self.link.send(codec.Typing(room, False))
        return True

    def set_away(self, message: str | None = "") -> bool:
        """Away (every device of the session), with ``message``; DONE answers."""
        self._away_asked = message or ""
        return self._request(codec.Away(True, message or None, ref="away"))

    def set_back(self) -> bool:
        return self._request(codec.Away(False, ref="back"))

    def change_nick(self, nick: str) -> bool:
        """NICK (a guest's): RENAMED answers, and the next login uses the new nick."""
        return self._request(codec.Nick(nick, ref="nick"))

    def direct_room(self, names: list[str]) -> str | None:
        """The name of a direct conversation we are in with exactly ``names``."""
        wanted = {room_key(n) for n in names} | {room_key(self.nick or "")}
        for track in self.rooms.values():
            if track.kind == "direct" and {room_key(n) for n in direct_participants(track.name)} == wanted:
                return track.name
        return None

    def open_direct(self, names: list[str], text: str | None = None) -> str | None:
        """OPEN the direct conversation with ``names`` (or use the one we are
        in) and say ``text`` there once it is open. Returns the OPEN's ref, or
        the conversation's name when it was already open."""
        existing = self.direct_room(names)
        if existing is not None:
            if text:
                self.say(text, existing)
            return existing
        ref = next(self._open_refs)
        if not self._request(codec.Open(list(names), ref=ref)):
            return None
        self._opening[ref] = (names[0] if len(names) == 1 else ",".join(names), text or "")
        return ref

    def message_to(self, nick: str, text: str) -> str | None:
        """/msg: an account to an account talks in their direct conversation
        (opened if need be); otherwise, and to a guest, a whisper."""
        if self.account and room_key(nick) != room_key(self.nick or ""):
            return self.open_direct([nick], text)
        return self.whisper(nick, text)

    def whisper(self, to: str, text: str) -> str | None:
        return self._submit(lambda ref: codec.Whisper(to, text, ref))

    def retry(self, ref: str) -> None:
        """Send a failed message again (same ref, so its row is reused)."""
        item = self._outgoing.get(ref)
        if item is not None and item.failed:
            item.failed = False
            self._queued.append(ref)
            self._drain()

    def request_older(self, room: str | None = None) -> bool:
        """Ask for the page of ``room`` before the oldest message shown; False
        if nothing to ask."""
        track = self.rooms.get(room_key(room or self.default_room))
        if self.state is not S.CONNECTED or track is None or track.older_requested:
            return False
        if track.oldest_seq in (None, 1):
            return False
        track.older_requested = True
        track.awaiting.append("before")
        self.link.send(codec.HistoryRequest(before=track.oldest_seq, limit=100, room=track.name))
        return True

    def join(self, room: str, key: str | None = None) -> bool:
        """JOIN a room (ROOM answers it), with its ``key`` if it has one (a
        refusal for want of it is ``key_needed``); False if not connected."""
        if not self.logged_in:
            self.events.error_received("offline", "not connected: join when the connection is back")
            return False
        if key:
            self._room_keys[room_key(room)] = key
        self.link.send(codec.Join(room, f"join:{room}", key or self._room_keys.get(room_key(room))))
        return True

    def part(self, room: str, reason: str | None = None) -> bool:
        if not self.logged_in or room_key(room) not in self.rooms:
            return False
        self.link.send(codec.Part(room, reason, f"part:{room}"))
        return True

    def set_topic(self, room: str, topic: str) -> bool:
        if not self.logged_in:
            self.events.error_received("offline", "not connected: set the topic when the connection is back")
            return False
        self.link.send(codec.SetTopic(room, topic, f"topic:{room}"))
        return True

    def list_rooms(self) -> bool:
        if not self.logged_in:
            return False
        self.link.send(codec.ListRooms("list"))
        return True

    def _request(self, packet) -> bool:
        if not self.logged_in:
            self.events.error_received("offline", "not connected: try again when the connection is back")
            return False
        self.link.send(packet)
        return True

    def mark_read(self, room: str, seq: int) -> bool:
        """Move the room's read marker (shared with the account's other devices)."""
        return self.logged_in and self._request(codec.Mark(room, seq))

    def moderate(
        self, room: str, op: str, target: str | None = None, reason: str | None = None, **modes
    ) -> bool:
        """An operator's action in ``room``: kick, ban, unban, op, deop, invite, mode, bans."""
        return self._request(codec.Moderate(room, op, target, reason, ref=f"moderate:{op}", **modes))

    def administer(self, op: str, **fields) -> bool:
        """A server admin's request: sessions, close, kick, ban, unban, ban_address, ..."""
        return self._request(codec.AdminRequest(op, ref=f"admin:{op}", **fields))

    def change_account(self, op: str, password: str, new_password: str | None = None) -> bool:
        """ACCOUNT password (change) or delete, given the current password."""
        if op == "password":
            self._new_password = new_password  # kept for logging in again once the server takes it
        return self._request(codec.AccountRequest(op, password, new_password, ref=f"account:{op}"))

    def trust_certificate(self, accept: bool) -> None:
        """The user's answer to certificate_unknown."""
        fingerprint, self._unknown_fingerprint = self._unknown_fingerprint, None
        if fingerprint is None:
            return
        if not accept:
            self._give_up(f"you did not trust the certificate of {self._where}")
            return
        self._pins[self._where] = fingerprint
        if self.state is S.TLS_CHECK and self.link is not None:
            self._log_in(self.link, "trusted")
        # else: the link went away meanwhile; the next attempt finds the pin

    # -- the link ----------------------------------------------------------------------

    def _announcing_retry(self, attempt: int) -> float:
        delay = self._retry(attempt)
        self._fire("retry_scheduled", f"{delay:.0f}")
        self.events.reconnect_scheduled(delay)
        return delay

    def _unreachable(self, why: str) -> None:
        self.events.error_received("unreachable", f"server not reachable: {why}")

    def _link_made(self, link: Link) -> None:
        self.link = link
        if self._tls is None:
            self._log_in(link, "plain_link")
        else:
            self._fire("tls_link", "TLS handshake")

    def _handshake_done(self, link: Link) -> None:
        if link is not self.link or self.state is not S.TLS_CHECK:
            return
        if self._tls.mode == PIN:
            seen = fingerprint_of(link.transport.getPeerCertificate())
            trusted = self._pins.get(self._where)
            if trusted is None:
                self._unknown_fingerprint = seen
                self.events.certificate_unknown(self._where, seen)
                return
            if trusted != seen:
                self._give_up(
                    f"the certificate of {self._where} has CHANGED since you trusted it "
                    f"(was {trusted}, now {seen}): refusing to connect"
                )
                return
        self._log_in(link, "trusted")

    def _log_in(self, link: Link, event: str) -> None:
        self._fire(event, "logging in")
        password = None if self._register else self._password
        link.send(codec.Login(self.nick, codec.PROTOCOL_VERSION, self._token, password=password))

    def _give_up(self, why: str, code: str = "tls", message: str | None = None) -> None:
        """A problem retrying can't fix: say so and stop."""
        self._final_reason = why
        self.events.error_received(code, message or why)
        self._stop_service()
        self._fire("give_up", why)

    def _link_lost(self, link: Link, reason) -> None:
        if link is not self.link:
            return
        self.link = None
        if reason is not None and reason.check(SSL.Error) and self._final_reason is None:
            self._give_up(
                f"TLS with {self._where} failed: the server's certificate was not accepted "
                f"({reason.getErrorMessage()})"
            )
            return
        was = self.state
        self._catching.clear()
        for track in self.rooms.values():
            track.older_requested = False
            track.joined = False
            track.changes_fetching = False
            track.awaiting.clear()
        self._files_token = None  # a new login gives a new session: its token is asked again
        self._no_token("offline", "the connection was lost: try again when it is back")
        for ref in list(self._searches):
            del self._searches[ref]
            self.events.search_failed(ref, "offline", "the connection was lost: search again when it is back")
        self._typing_sent.clear()
        self.typers.clear()
        self._member_asks.clear()  # the rooms' ROOMs start their lists again
        for ref, (whom, text) in list(self._opening.items()):  # its answer went with the link
            del self._opening[ref]
            if text:
                self.events.error_received("offline", f"not sent to {whom} (connection lost): {text}")
        if self._pinger.running:
            self._pinger.stop()
        for item in self._outgoing.values():  # unacknowledged: settled after catch-up
            item.sent = False
        if self._final_reason is not None:
            if was in _ACTIVE:
                self._stop_service()
                self._fire("give_up", self._final_reason)
        elif was in _LINKED:
            if was in (S.CATCHING_UP, S.CONNECTED) and not self._outage:
                self._outage = True
                for track in self.rooms.values():
                    track.seq_at_drop = track.last_seq
                self._missed = 0
                self.events.connection_lost()
            self._fire("link_lost", "connection lost")

    def _stop_service(self) -> Deferred:
        """Stop reconnecting and close the link; a second caller (the app's
        shutdown trigger after the window's close) waits for the same stop."""
        service, self._service = self._service, None
        self._unknown_fingerprint = None
        if self._pinger.running:
            self._pinger.stop()
        if service is not None and service.running:
            self._stopping = service.stopService()
        if self._stopping is None or self._stopping.called:
            return succeed(None)
        waiter: Deferred = Deferred()

        def release(result):
            waiter.callback(None)
            return result

        self._stopping.addBoth(release)
        return waiter

    # -- packets ---------------------------------------------------------------------

    def _packet(self, link: Link, packet) -> None:
        """Only the current link, and only once LOGIN is sent on it."""
        if link is not self.link or self.state not in _LISTENING:
            return
        handler = _HANDLERS.get(type(packet))
        if handler is not None:
            handler(self, packet)

    def _on_welcome(self, welcome: codec.Welcome) -> None:
        if self.state is not S.LOGGING_IN:
            return  # one WELCOME per login
        self.nick = welcome.nick
        self.server = welcome.server
        self.my_id = welcome.id
        self._token = welcome.resume
        self.limits = dict(welcome.limits)
        self.default_room = welcome.default_room or self.default_room
        self.account, self.admin = bool(welcome.account), bool(welcome.admin)
        self.typers.interval = self.typing_interval()
        for name in welcome.rooms or ():  # an account's remembered rooms, or a resume's
            self.rooms.setdefault(room_key(name), RoomTrack(name))
        if not self.rooms:  # a first login: the server's default room to begin with
            self.rooms[room_key(self.default_room)] = RoomTrack(self.default_room)
        held = {room_key(name) for name in welcome.rooms or ()}  # their ROOMs come by themselves
        if self._register:
            self.link.send(codec.AccountRequest("register", self._password, ref="account:register"))
        self._catching = {key for key, track in self.rooms.items() if track.last_seq > 0}
        self._fire("welcome_with_gap" if self._catching else "welcome", welcome.server)
        self.events.welcome_received(welcome)
        for key, track in self.rooms.items():
            if key not in held:  # a resume's ROOMs come by themselves
                self.link.send(codec.Join(track.name, f"join:{track.name}", self._room_keys.get(key)))
        if not self._catching:
            self._online()
        if self.away is not None:  # away lasts across a new login too (a resume keeps it anyway)
            self.link.send(codec.Away(True, self.away or None, ref="away"))
        self._pinger.start(PING_EVERY, now=True)

    def _online(self) -> None:
        """Logged in and caught up: what waited can go, and an outage is over."""
        self._resend_unacknowledged()
        if self._outage:
            self._outage = False
            self.events.back_online(self._missed)

    def _caught_up(self, key: str) -> None:
        self._catching.discard(key)
        if not self._catching and self.state is S.CATCHING_UP:
            self._fire("caught_up", self.server)
            self._online()

    def _on_room(self, state: codec.RoomState) -> None:
        key = room_key(state.room)
        track = self.rooms.get(key)
        if track is None:
            track = self.rooms[key] = RoomTrack(state.room)
        track.name, track.joined, track.kind = state.room, True, state.kind
        track.lazy = bool(state.lazy)
        if state.key:  # joined again after a reconnect with the key it has now
            self._room_keys[key] = state.key
        newest = state.history[-1].seq if state.history else 0
        # A server that lost its history (":memory:") numbers from 1 again.
        reset = newest < track.last_seq
        if reset:
            track.last_seq, track.oldest_seq, track.seq_at_drop, track.rev = 0, None, 0, None
        count = state.count if state.count is not None else len(state.members)
        counted, track.count = track.count, count  # the window reads count_of while it shows the room
        self.events.room_joined(state, reset)
        if count != counted:
            self.events.count_changed(track.name, count)
        if state.ref is not None and state.ref in self._opening:  # our OPEN: say what waited for it
            _whom, text = self._opening.pop(state.ref)
            if text:
                self.say(text, state.room)
        self._catch_up_changes(track, state.rev)
        if state.history and track.oldest_seq is None:
            track.oldest_seq = state.history[0].seq
        covered = not state.history or state.history[0].seq <= track.last_seq + 1
        if key in self._catching and not covered:
            # the pages after last_seq bring (and count) what was missed
            self.link.send(codec.HistoryRequest(after=track.last_seq, limit=CATCH_UP_PAGE, room=track.name))
            return
        self._count_missed(track, state.history)
        self._note_seqs(track, state.history)
        self._settle_against(track, state.history)
        self._caught_up(key)

    def _on_message(self, message: codec.MessagePacket) -> None:
        track = self.rooms.get(room_key(message.room or self.default_room))
        if track is not None:
            self._note_seqs(track, [message])
        self.typers.stopped(message.room or self.default_room, message.sender)
        if message.ref is not None and self._outgoing.pop(message.ref, None) is not None:
            self.events.send_confirmed(message.ref, message.seq)
        self.events.message_received(message)

    def _on_history_page(self, page: codec.HistoryPage) -> None:
        key = room_key(page.room or self.default_room)
        track = self.rooms.get(key)
        if track is None:
            return  # a room left since the request
        if page.rev is not None and track.changes_fetching:  # an answer to changed_after (19.9)
            self._on_changes_page(track, page)
            return
        if key in self._catching:
            self._count_missed(track, page.messages)
            self._note_seqs(track, page.messages)
            self.events.history_received(track.name, page.messages, page.more, "after")
            self._settle_against(track, page.messages)
            if page.more:
                self.link.send(
                    codec.HistoryRequest(after=track.last_seq, limit=CATCH_UP_PAGE, room=track.name)
                )
            else:
                self._caught_up(key)
            return
        answers = track.awaiting.popleft() if track.awaiting else "before"
        if isinstance(answers, int):  # HISTORY around a search hit
            if page.messages and (track.oldest_seq is None or page.messages[0].seq < track.oldest_seq):
                track.oldest_seq = page.messages[0].seq
            self.events.history_around(track.name, answers, page.messages, page.more)
            return
        track.older_requested = False
        if page.messages:
            track.oldest_seq = page.messages[0].seq
        elif not page.more:
            track.oldest_seq = 1
        self.events.history_received(track.name, page.messages, page.more, "before")

    def _catch_up_changes(self, track: RoomTrack, rev: int | None) -> None:
        """A ROOM said the room's latest rev: the first time, it is where we
        start; after that, a higher one means changes we missed, which
        changed_after pages bring."""
        if rev is None:
            return
        if track.rev is None:
            track.rev = rev
            return
        if rev > track.rev and not track.changes_fetching:
            track.changes_fetching = True
            request = codec.HistoryRequest(limit=CATCH_UP_PAGE, room=track.name, changed_after=track.rev)
            self.link.send(request)

    def _on_changes_page(self, track: RoomTrack, page: codec.HistoryPage) -> None:
        for message in page.messages:
            self.events.message_changed(track.name, message, "catch_up", "")
        revs = [m.rev for m in page.messages if m.rev is not None]
        cursor = max(revs) if revs else None
        if page.more and cursor is not None and cursor > (track.rev or 0):
            track.rev = cursor
            self.link.send(codec.HistoryRequest(limit=CATCH_UP_PAGE, room=track.name, changed_after=cursor))
            return
        track.changes_fetching = False
        track.rev = max(track.rev or 0, cursor or 0, page.rev or 0)

    def _on_changed(self, changed: codec.Changed) -> None:
        track = self.rooms.get(room_key(changed.room))
        if track is not None and changed.message.rev is not None and not track.changes_fetching:
            track.rev = max(track.rev or 0, changed.message.rev)
        self.events.message_changed(changed.room, changed.message, changed.kind, changed.by)

    def _on_typing(self, notice: codec.TypingNotice) -> None:
        if self.nick is not None and room_key(notice.nick) == room_key(self.nick):
            return  # our own, from another device
        if notice.typing:
            self.typers.typing(notice.room, notice.nick)
        else:
            self.typers.stopped(notice.room, notice.nick)

    def _on_status(self, status: codec.Status) -> None:
        self.events.status_changed(status)

    def _on_renamed(self, renamed: codec.Renamed) -> None:
        """A member (or we) took another nick: ours is what a login again uses."""
        if self.nick is not None and room_key(renamed.old) == room_key(self.nick):
            self.nick = renamed.nick
        for room in list(self.rooms.values()):
            self.typers.stopped(room.name, renamed.old)
        self.events.renamed(renamed)

    def _on_private(self, private: codec.Private) -> None:
        if private.ref is not None and self._outgoing.pop(private.ref, None) is not None:
            self.events.send_confirmed(private.ref, 0)
        self.events.private_received(private)

    def _on_joined(self, joined: codec.Joined) -> None:
        track = self.rooms.get(room_key(joined.room)) if joined.room else None
        self.events.peer_joined(joined)
        if track is not None and not track.lazy:  # a big room's count comes in COUNT
            self._set_count(track, track.count + 1)

    def _on_left(self, left: codec.Left) -> None:
        if left.id == self.my_id and left.room is not None:  # our own PART
            self.rooms.pop(room_key(left.room), None)
            self._caught_up(room_key(left.room))
            self.events.room_left(left)
            return
        track = self.rooms.get(room_key(left.room)) if left.room else None
        self.events.peer_left(left)
        if track is not None and not track.lazy:
            self._set_count(track, max(0, track.count - 1))

    def _on_topic(self, topic: codec.TopicChanged) -> None:
        self.events.topic_changed(topic)

    def _on_rooms(self, listing: codec.RoomList) -> None:
        self.events.rooms_listed(listing.rooms)

    def _on_pending(self, pending: codec.Pending) -> None:
        self.events.pending_changed(pending)

    def _on_server_ping(self, ping: codec.ServerPing) -> None:
        self.link.send(codec.Pong(ping.token))

    def _on_pong(self, pong: codec.PongReply) -> None:
        sent = self._pings.pop(pong.token, None)
        if sent is not None:
            self.events.rtt_measured(self.reactor.seconds() - sent)

    def _on_marked(self, marked: codec.Marked) -> None:
        self.events.marked(marked)

    def _on_done(self, done: codec.Done) -> None:
        if done.op == "register":
            self._register, self.account = False, True
        elif done.op == "password" and self._new_password is not None:
            self._password, self._new_password = self._new_password, None
        elif done.op == "delete":
            self.account, self.admin, self._password = False, False, None
        elif done.op == "away":
            self.away = self._away_asked if self._away_asked is not None else ""
        elif done.op == "back":
            self.away = None
        self.events.done(done)

    def _on_bans(self, bans: codec.BanList) -> None:
        self.events.bans_listed(bans)

    def _on_sessions(self, sessions: codec.Sessions) -> None:
        self.events.sessions_listed(sessions)

    def _on_invited(self, invited: codec.Invited) -> None:
        self.events.invited(invited)

    def _on_bye(self, bye: codec.Bye) -> None:
        if bye.reason in _FINAL_BYES:
            self._final_reason = bye.reason
        self.events.error_received("bye", f"server closed the connection: {bye.reason}")

    def _on_error(self, error: codec.Error) -> None:
        if error.ref is not None and error.ref in self._outgoing:
            item = self._outgoing[error.ref]
            item.sent, item.failed = False, True
            self.events.send_failed(error.ref, error.message)
            return
        if error.ref is not None and error.ref in self._opening:
            whom, text = self._opening.pop(error.ref)
            guest = error.code in (ErrorCode.NO_SUCH_ACCOUNT, ErrorCode.NOT_REGISTERED)
            if guest and text and "," not in whom:
                self.whisper(whom, text)  # a guest: a whisper, as before conversations
                return
        if error.ref is not None and error.ref.startswith("join:"):
            # A room we could not join (again): say why, and stop waiting for it.
            key = room_key(error.ref[5:])
            if key in self.rooms and not self.rooms[key].joined:
                del self.rooms[key]
                self._caught_up(key)
            if error.code == ErrorCode.BAD_KEY:  # the user may know the key: ask
                self._room_keys.pop(key, None)
                self.events.key_needed(error.ref[5:], error.message)
                return
        if error.ref == "files":
            self._no_token(error.code, error.message)
            return
        if error.ref is not None and self._searches.pop(error.ref, None) is not None:
            self.events.search_failed(error.ref, error.code, error.message)
            return
        asked = self._member_asks.pop(error.ref, None) if error.ref is not None else None
        if asked is not None and error.ref is not None:
            self.events.members_failed(error.ref, asked[0], error.code, error.message)
            return
        if error.ref == "nick":  # a refused NICK: the nick we have is still ours
            self.events.error_received("nick_refused", f"can't change nick: {error.message}")
            return
        if self.state is S.LOGGING_IN and error.code in _FINAL_ERRORS:
            # A login the user must fix: retrying the same nick can't help.
            self._give_up(f"{error.code}: {error.message}", error.code, error.message)
            return
        self.events.error_received(error.code, error.message)

    # -- sending ---------------------------------------------------------------------

    def _submit(self, make) -> str | None:
        if len(self._queued) >= MAX_QUEUED:
            self.events.error_received("queue_full", f"{MAX_QUEUED} messages are already waiting to be sent")
            return None
        ref = next(self._refs)
        item = Outgoing(ref, make(ref))
        self._outgoing[ref] = item
        self._queued.append(ref)
        self.events.send_queued(ref, item.packet)
        self._drain()
        return ref

    def _drain(self) -> None:
        if self.state is not S.CONNECTED:
            return
        while self._queued:
            item = self._outgoing.get(self._queued.popleft())
            if item is not None and not item.sent:
                item.sent = True
                self.link.send(item.packet)

    def _settle_against(self, track: RoomTrack, messages: list[codec.Message]) -> None:
        """Messages sent before a drop whose echo never came: if the server
        stored them, history shows them under our nick; confirm those."""
        for message in messages:
            if message.sender != self.nick:
                continue
            for ref, item in list(self._outgoing.items()):
                if (
                    not item.sent
                    and not item.failed
                    and ref not in self._queued
                    and isinstance(item.packet, codec.Say)
                    and room_key(item.packet.room or self.default_room) == room_key(track.name)
                    and item.packet.text == message.text
                    and (item.packet.files or []) == [f.id for f in getattr(message, "files", None) or ()]
                ):
                    del self._outgoing[ref]
                    self.events.send_confirmed(ref, message.seq)
                    break

    def _resend_unacknowledged(self) -> None:
        for ref, item in self._outgoing.items():
            if not item.sent and not item.failed and ref not in self._queued:
                self._queued.append(ref)
        self._drain()

    @staticmethod
    def _note_seqs(track: RoomTrack, messages) -> None:
        for message in messages:
            if message.seq > track.last_seq:
                track.last_seq = message.seq

    def _count_missed(self, track: RoomTrack, messages) -> None:
        if self._outage:
            self._missed += sum(1 for m in messages if m.seq > max(track.seq_at_drop, track.last_seq))

    def _ping(self) -> None:
        if self.link is None:
            return
        token = f"p{next(self._ping_tokens)}"
        self._pings = {token: self.reactor.seconds()}  # only the newest matters
        self.link.send(codec.Ping(token))


_HANDLERS: dict[type, Callable[[ClientSession, object], None]] = {
    codec.Welcome: ClientSession._on_welcome,
    codec.MessagePacket: ClientSession._on_message,
    codec.HistoryPage: ClientSession._on_history_page,
    codec.Private: ClientSession._on_private,
    codec.Joined: ClientSession._on_joined,
    codec.Left: ClientSession._on_left,
    codec.Pending: ClientSession._on_pending,
    codec.ServerPing: ClientSession._on_server_ping,
    codec.PongReply: ClientSession._on_pong,
    codec.Bye: ClientSession._on_bye,
    codec.Error: ClientSession._on_error,
    codec.RoomState: ClientSession._on_room,
    codec.TopicChanged: ClientSession._on_topic,
    codec.RoomList: ClientSession._on_rooms,
    codec.Marked: ClientSession._on_marked,
    codec.Done: ClientSession._on_done,
    codec.BanList: ClientSession._on_bans,
    codec.Sessions: ClientSession._on_sessions,
    codec.Invited: ClientSession._on_invited,
    codec.Changed: ClientSession._on_changed,
    codec.TypingNotice: ClientSession._on_typing,
    codec.Status: ClientSession._on_status,
    codec.Renamed: ClientSession._on_renamed,
    codec.FilesToken: ClientSession._on_files_token,
    codec.Results: ClientSession._on_results,
    codec.Members: ClientSession._on_members_page,
    codec.Count: ClientSession._on_count,
}
