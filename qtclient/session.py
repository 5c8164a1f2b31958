"""The session for Qt: the Qt-free state machine's events as signals.

:class:`ChatSession` holds a :class:`~qtclient.session_machine.ClientSession`
and emits one signal per event it reports; calls go straight to the machine
(``session.machine.say(...)`` or the shortcuts below). No logic lives here.
"""

from __future__ import annotations

from PyQt6.QtCore import QObject, pyqtSignal

from qtclient.session_machine import ClientSession, SessionEvents, State

DISCONNECTED = State.DISCONNECTED
CONNECTING = State.CONNECTING
TLS_CHECK = State.TLS_CHECK
LOGGING_IN = State.LOGGING_IN
CATCHING_UP = State.CATCHING_UP
CONNECTED = State.CONNECTED
RECONNECTING = State.RECONNECTING
GIVEN_UP = State.GIVEN_UP


class ChatSession(QObject, SessionEvents):
    stateChanged = pyqtSignal(object, str)  # State, detail
    reconnectScheduled = pyqtSignal(float)  # seconds until the next attempt
    welcomed = pyqtSignal(object)  # codec.Welcome
    roomJoined = pyqtSignal(object, bool)  # codec.RoomState, whether the room's history was reset
    roomLeft = pyqtSignal(object)  # codec.Left: our own PART
    topicChanged = pyqtSignal(object)  # codec.TopicChanged
    roomsListed = pyqtSignal(object)  # [codec.RoomInfo]
    messageReceived = pyqtSignal(object)  # codec.MessagePacket (live, or the own echo)
    historyReceived = pyqtSignal(str, object, bool, str)  # room, [codec.Message], more, "before" | "after"
    privateReceived = pyqtSignal(object)  # codec.Private
    peerJoined = pyqtSignal(object)  # codec.Joined
    peerLeft = pyqtSignal(object)  # codec.Left
    pendingChanged = pyqtSignal(object)  # codec.Pending
    sendQueued = pyqtSignal(str, object)  # ref, codec.Say | codec.Whisper
    sendConfirmed = pyqtSignal(str, int)  # ref, seq (0 for whispers)
    sendFailed = pyqtSignal(str, str)  # ref, why
    errorReceived = pyqtSignal(str, str)  # code, message: problems to show the user
    rttMeasured = pyqtSignal(float)
    certificateUnknown = pyqtSignal(str, str)  # host:port, SHA-256 fingerprint: trust it?
    connectionLost = pyqtSignal()  # a logged-in link dropped; reconnecting
    reconnected = pyqtSignal(int)  # back and caught up: how many missed messages were fetched
    markMoved = pyqtSignal(object)  # codec.Marked: a read marker moved (on any of our devices)
    requestDone = pyqtSignal(object)  # codec.Done: an ACCOUNT or ADMIN request carried out
    bansListed = pyqtSignal(object)  # codec.BanList
    sessionsListed = pyqtSignal(object)  # codec.Sessions (admins)
    invitedTo = pyqtSignal(object)  # codec.Invited
    messageChanged = pyqtSignal(str, object, str, str)  # room, codec.Message, kind, by
    typingChanged = pyqtSignal(str, object)  # room, [nick] typing there now
    statusChanged = pyqtSignal(object)  # codec.Status: a member went away or came back
    keyNeeded = pyqtSignal(str, str)  # room, why: JOIN refused bad_key (the room has a key)
    nickChanged = pyqtSignal(object)  # codec.Renamed: a member (or we) took another nick
    resultsReceived = pyqtSignal(str, object, object)  # ref, codec.Search, codec.Results
    searchFailed = pyqtSignal(str, str, str)  # ref, code, message
    historyAround = pyqtSignal(str, int, object, bool)  # room, seq, [codec.Message], more
    countChanged = pyqtSignal(str, int)  # room, how many members it has now
    roomTurnedBig = pyqtSignal(str, int)  # room, its count: from now on listed a page at a time
    membersReceived = pyqtSignal(str, object, object)  # ref, codec.Members, the prefix asked (or None)
    membersFailed = pyqtSignal(str, str, str, str)  # ref, room, code, message

    def __init__(self, reactor, parent: QObject | None = None, retry=None, endpoint_for=None) -> None:
        super().__init__(parent)
        self.machine = ClientSession(reactor, self, retry=retry, endpoint_for=endpoint_for)
        # The calls a window makes, straight to the machine.
        m = self.machine
        self.connect_to, self.disconnect, self.say, self.whisper = (
            m.connect_to,
            m.disconnect,
            m.say,
            m.whisper,
        )
        self.retry, self.request_older, self.trust_certificate = m.retry, m.request_older, m.trust_certificate
        self.join, self.part, self.set_topic, self.list_rooms = m.join, m.part, m.set_topic, m.list_rooms
        self.mark_read, self.moderate, self.administer, self.change_account = (
            m.mark_read,
            m.moderate,
            m.administer,
            m.change_account,
        )
        self.edit, self.delete, self.react, self.typing = m.edit, m.delete, m.react, m.typing
        self.set_away, self.set_back, self.open_direct, self.message_to = (
            m.set_away,
            m.set_back,
            m.open_direct,
            m.message_to,
        )
        self.change_nick = m.change_nick
        self.files_token, self.search, self.open_around = m.files_token, m.search, m.open_around
        self.members, self.follow = m.members, m.follow

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def nick(self) -> str | None:
        return self.machine.nick

    @property
    def limits(self) -> dict:
        return self.machine.limits

    @property
    def default_room(self) -> str:
        return self.machine.default_room

    @property
    def my_id(self) -> int | None:
        return self.machine.my_id

    # SessionEvents -> signals

    def state_changed(self, state, detail):
        self.stateChanged.emit(state, detail)

    def reconnect_scheduled(self, delay):
        self.reconnectScheduled.emit(delay)

    def welcome_received(self, welcome):
        self.welcomed.emit(welcome)

    def room_joined(self, state, reset):
        self.roomJoined.emit(state, reset)

    def room_left(self, left):
        self.roomLeft.emit(left)

    def topic_changed(self, topic):
        self.topicChanged.emit(topic)

    def rooms_listed(self, rooms):
        self.roomsListed.emit(rooms)

    def message_received(self, message):
        self.messageReceived.emit(message)

    def history_received(self, room, messages, more, direction):
        self.historyReceived.emit(room, messages, more, direction)

    def private_received(self, private):
        self.privateReceived.emit(private)

    def peer_joined(self, joined):
        self.peerJoined.emit(joined)

    def peer_left(self, left):
        self.peerLeft.emit(left)

    def pending_changed(self, pending):
        self.pendingChanged.emit(pending)

    def send_queued(self, ref, packet):
        self.sendQueued.emit(ref, packet)

    def send_confirmed(self, ref, seq):
        self.sendConfirmed.emit(ref, seq)

    def send_failed(self, ref, why):
        self.sendFailed.emit(ref, why)

    def key_needed(self, room, message):
        self.keyNeeded.emit(room, message)

    def error_received(self, code, message):
        self.errorReceived.emit(code, message)

    def rtt_measured(self, rtt):
        self.rttMeasured.emit(rtt)

    def certificate_unknown(self, where, fingerprint):
        self.certificateUnknown.emit(where, fingerprint)

    def connection_lost(self):
        self.connectionLost.emit()

    def back_online(self, missed):
        self.reconnected.emit(missed)

    def marked(self, marked):
        self.markMoved.emit(marked)

    def done(self, done):
        self.requestDone.emit(done)

    def bans_listed(self, bans):
        self.bansListed.emit(bans)

    def sessions_listed(self, sessions):
        self.sessionsListed.emit(sessions)

    def invited(self, invited):
        self.invitedTo.emit(invited)

    def message_changed(self, room, message, kind, by):
        self.messageChanged.emit(room, message, kind, by)

    def typing_changed(self, room, nicks):
        self.typingChanged.emit(room, nicks)

    def status_changed(self, status):
        self.statusChanged.emit(status)

    def renamed(self, renamed):
        self.nickChanged.emit(renamed)

    def results_received(self, ref, query, results):
        self.resultsReceived.emit(ref, query, results)

    def search_failed(self, ref, code, message):
        self.searchFailed.emit(ref, code, message)

    def history_around(self, room, seq, messages, more):
        self.historyAround.emit(room, seq, messages, more)

    def count_changed(self, room, count):
        self.countChanged.emit(room, count)

    def room_turned_big(self, room, count):
        self.roomTurnedBig.emit(room, count)

    def members_received(self, ref, page, prefix):
        self.membersReceived.emit(ref, page, prefix)

    def members_failed(self, ref, room, code, message):
        self.membersFailed.emit(ref, room, code, message)
