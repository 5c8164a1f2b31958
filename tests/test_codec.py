"""The pure codec: round trips and every way a payload can be malformed."""

import dataclasses
import json
import typing

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.codec import ErrorCode, PacketType, ProtocolError

texts = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=60)
short = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
refs = st.none() | texts
ints = st.integers(min_value=codec.INT_MIN, max_value=codec.INT_MAX)
floats = st.floats(allow_nan=False, allow_infinity=False)
messages = st.builds(codec.Message, ints, floats, texts, texts, st.none())

client_packets = st.one_of(
    st.builds(codec.Login, texts, ints, refs, refs),
    st.builds(codec.Say, texts, refs),
    st.builds(codec.Whisper, texts, texts, refs),
    st.builds(codec.Ping, refs, refs),
    st.builds(codec.Quit, refs, refs),
    st.builds(codec.HistoryRequest, st.none() | ints, st.none() | ints, st.none() | ints, refs),
    st.builds(codec.Pong, refs, refs),
)
server_packets = st.one_of(
    st.builds(
        codec.Welcome,
        texts,
        ints,
        texts,
        texts,
        texts,
        st.lists(st.builds(codec.Peer, ints, texts), max_size=5),
        st.lists(ints, max_size=5),
        st.lists(messages, max_size=5),
        st.dictionaries(st.sampled_from(["max_frame", "rate"]), ints),
    ),
    st.builds(codec.MessagePacket, ints, floats, texts, texts, refs),
    st.builds(codec.Private, floats, texts, texts, texts, refs),
    st.builds(codec.Joined, ints, texts),
    st.builds(codec.Left, ints, texts, texts, refs),
    st.builds(codec.Pending, ints, st.sampled_from(["connecting", "gone"])),
    st.builds(codec.PongReply, refs),
    st.builds(codec.Error, texts, texts, refs),
    st.builds(codec.HistoryPage, st.lists(messages, max_size=5), st.booleans()),
    st.builds(codec.Bye, texts),
    st.builds(codec.ServerPing, refs),
)


def payload(packet_type: int, body) -> bytes:
    return bytes((packet_type,)) + json.dumps(body).encode()


class RoundTrip(SynchronousTestCase):
    @given(client_packets)
    def test_client_packets(self, packet):
        self.assertEqual(codec.decode_client(codec.encode(packet)), packet)

    @given(server_packets)
    def test_server_packets(self, packet):
        self.assertEqual(codec.decode_server(codec.encode(packet)), packet)

    def test_wire_names(self):
        """``sender`` is ``from`` on the wire; absent optionals are omitted; JSON is compact."""
        raw = codec.encode(codec.MessagePacket(7, 1.5, "ann", "hé"))
        self.assertEqual(raw, b'\x82{"seq":7,"ts":1.5,"from":"ann","text":"h\xc3\xa9"}')

    @given(st.lists(st.binary(max_size=50), max_size=5), st.binary(max_size=3))
    def test_split_frames(self, payloads, partial):
        stream = b"".join(codec.frame(p) for p in payloads)
        self.assertEqual(codec.split_frames(stream + partial[:3]), (payloads, partial[:3]))

    def test_frame_is_int32_prefix(self):
        self.assertEqual(codec.frame(b"\x04{}"), b"\x00\x00\x00\x03\x04{}")

    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_only_raise_protocol_error(self, data):
        for decode in (codec.decode_client, codec.decode_server):
            try:
                decode(data)
            except ProtocolError as e:
                self.assertIn(e.code, (ErrorCode.BAD_PACKET, ErrorCode.UNKNOWN_TYPE))

    @given(
        st.sampled_from([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07]),
        st.dictionaries(
            st.sampled_from(["nick", "proto", "text", "to", "ref", "before", "limit", "x"]),
            st.none() | st.booleans() | ints | floats | short | st.lists(ints, max_size=2),
            max_size=4,
        ),
    )
    def test_arbitrary_bodies_decode_or_say_why(self, packet_type, body):
        try:
            codec.decode_client(payload(packet_type, body))
        except ProtocolError as e:
            self.assertEqual(e.code, ErrorCode.BAD_PACKET)
            self.assertTrue(e.message)


class Malformed(SynchronousTestCase):
    def assertRefused(self, raw: bytes, code: str = ErrorCode.BAD_PACKET, ref=None) -> ProtocolError:
        with self.assertRaises(ProtocolError) as caught:
            codec.decode_client(raw)
        self.assertEqual(caught.exception.code, code)
        self.assertEqual(caught.exception.ref, ref)
        return caught.exception

    def test_empty_payload(self):
        self.assertRefused(b"")

    def test_type_without_body(self):
        self.assertRefused(b"\x02")

    def test_unknown_types(self):
        for type_byte in (0x00, 0x1F, 0x7F, PacketType.WELCOME, 0xFF):
            self.assertRefused(bytes((type_byte,)) + b"{}", ErrorCode.UNKNOWN_TYPE)

    def test_unknown_type_echoes_ref(self):
        self.assertRefused(b'\x42{"ref":"r9"}', ErrorCode.UNKNOWN_TYPE, ref="r9")

    def test_not_utf8(self):
        self.assertRefused(b'\x02{"text":"\xff"}')

    def test_not_json(self):
        self.assertRefused(b"\x02{text}")
        self.assertRefused(b'\x02{"text":"a",}')

    def test_json_constants_that_are_not_json(self):
        self.assertRefused(b'\x06{"before":NaN}')
        self.assertRefused(b'\x06{"before":Infinity}')

    def test_not_an_object(self):
        for body in (b"[]", b'"x"', b"1", b"null"):
            self.assertRefused(b"\x02" + body)

    def test_missing_field(self):
        e = self.assertRefused(payload(0x02, {"ref": "r"}), ref="r")
        self.assertIn("text", e.message)

    def test_wrong_types(self):
        self.assertRefused(payload(0x01, {"nick": "a", "proto": "1"}))
        self.assertRefused(payload(0x01, {"nick": "a", "proto": True}))
        self.assertRefused(payload(0x01, {"nick": 5, "proto": 1}))
        self.assertRefused(payload(0x06, {"before": 1.0}))
        self.assertRefused(payload(0x02, {"text": "a", "ref": 5}))

    def test_error_echoes_a_valid_ref(self):
        self.assertRefused(payload(0x03, {"text": "hi", "ref": "abc"}), ref="abc")

    def test_null_optional_is_absent(self):
        self.assertEqual(codec.decode_client(payload(0x02, {"text": "a", "ref": None})), codec.Say("a"))

    def test_unknown_fields_ignored(self):
        self.assertEqual(codec.decode_client(payload(0x04, {"token": "t", "v2": [1]})), codec.Ping("t"))

    def test_a_version_1_login_ignores_its_password_whatever_its_kind(self):
        """Version 1 has no password (docs/protocol.md 15): an unknown field, ignored."""
        for value in (12345, True, [1], {"x": 1}, "a password"):
            login = codec.decode_client(payload(0x01, {"nick": "ann", "proto": 1, "password": value}))
            self.assertEqual(login, codec.Login("ann", 1), value)
        login = codec.decode_client(b'\x01{"nick":"ann","proto":1,"password":"\\ud800"}')
        self.assertEqual(login, codec.Login("ann", 1), "not even a lone surrogate is looked at")
        e = self.assertRefused(
            payload(0x01, {"nick": "ann", "proto": 2, "password": 12345, "ref": "l"}), ref="l"
        )
        self.assertEqual(e.message, "field 'password' must be a string", "version 2 has the field")

    def test_lone_surrogate_outside_text_and_nick_is_bad_packet(self):
        self.assertRefused(b'\x02{"text":"ok","ref":"\\ud800"}')
        self.assertRefused(b'\x04{"x":["\\udc00"]}')
        self.assertRefused(b'\x04{"\\ud800":1}')

    def test_lone_surrogate_in_text_or_nick_is_left_to_their_rules(self):
        say = codec.decode_client(b'\x02{"text":"a\\ud800"}')
        self.assertTrue(codec.has_lone_surrogate(say.text))
        login = codec.decode_client(b'\x01{"nick":"\\udfff","proto":1}')
        self.assertTrue(codec.has_lone_surrogate(login.nick))

    def test_surrogate_pair_is_one_character(self):
        say = codec.decode_client(b'\x02{"text":"\\ud83d\\ude00"}')
        self.assertEqual(say.text, "\U0001f600")

    def test_deep_nesting_is_bad_packet_not_a_crash(self):
        self.assertRefused(b'\x04{"x":' + b"[" * 100000 + b"]" * 100000 + b"}")


# Every integer field, with a valid packet around it: (decode, type, body, path to the field).
INTEGER_FIELDS = [
    (codec.decode_client, PacketType.LOGIN, {"nick": "ann", "proto": 1}, ("proto",)),
    (codec.decode_client, PacketType.HISTORY, {"before": 1}, ("before",)),
    (codec.decode_client, PacketType.HISTORY, {"after": 1}, ("after",)),
    (codec.decode_client, PacketType.HISTORY, {"limit": 1}, ("limit",)),
    (
        codec.decode_server,
        PacketType.WELCOME,
        {
            "nick": "a",
            "id": 1,
            "resume": "t",
            "server": "s",
            "motd": "",
            "peers": [{"id": 1, "nick": "a"}],
            "pending": [2],
            "history": [{"seq": 1, "ts": 1.0, "from": "a", "text": "x"}],
            "limits": {},
        },
        ("id",),
    ),
    (codec.decode_server, PacketType.WELCOME, None, ("peers", 0, "id")),
    (codec.decode_server, PacketType.WELCOME, None, ("pending", 0)),
    (codec.decode_server, PacketType.WELCOME, None, ("history", 0, "seq")),
    (codec.decode_server, PacketType.MESSAGE, {"seq": 1, "ts": 1.0, "from": "a", "text": "x"}, ("seq",)),
    (
        codec.decode_server,
        PacketType.HISTORY_PAGE,
        {"messages": [{"seq": 1, "ts": 1.0, "from": "a", "text": "x"}], "more": False},
        ("messages", 0, "seq"),
    ),
    (codec.decode_server, PacketType.JOINED, {"id": 1, "nick": "a"}, ("id",)),
    (codec.decode_server, PacketType.LEFT, {"id": 1, "nick": "a", "reason": "quit"}, ("id",)),
    (codec.decode_server, PacketType.PENDING, {"id": 1, "state": "gone"}, ("id",)),
    (
        codec.decode_server,
        PacketType.ROOM,
        {
            "room": "r",
            "topic": "",
            "members": [{"id": 1, "nick": "a"}],
            "history": [{"seq": 1, "ts": 1.0, "from": "a", "text": "x"}],
        },
        ("members", 0, "id"),
    ),
    (codec.decode_server, PacketType.ROOM, None, ("history", 0, "seq")),
    (
        codec.decode_server,
        PacketType.ROOMS,
        {"rooms": [{"room": "r", "topic": "", "members": 1}]},
        ("rooms", 0, "members"),
    ),
    (codec.decode_client, PacketType.MARK, {"room": "r", "seq": 1}, ("seq",)),
    (
        codec.decode_server,
        PacketType.ROOM,
        {"room": "r", "topic": "", "members": [], "history": [], "read": 1, "unread": 1},
        ("read",),
    ),
    (codec.decode_server, PacketType.ROOM, None, ("unread",)),
    (codec.decode_server, PacketType.MARKED, {"room": "r", "seq": 1, "unread": 0}, ("seq",)),
    (codec.decode_server, PacketType.MARKED, None, ("unread",)),
    (
        codec.decode_server,
        PacketType.SESSIONS,
        {
            "pending": [{"id": 1, "address": "a", "since": 1.0}],
            "connected": [
                {
                    "id": 2,
                    "nick": "n",
                    "address": "a",
                    "since": 1.0,
                    "rooms": [],
                    "account": False,
                    "devices": 1,
                }
            ],
        },
        ("pending", 0, "id"),
    ),
    (codec.decode_server, PacketType.SESSIONS, None, ("connected", 0, "id")),
    (codec.decode_server, PacketType.SESSIONS, None, ("connected", 0, "devices")),
    (codec.decode_client, PacketType.SAY, {"text": "t", "reply": 1}, ("reply",)),
    (codec.decode_client, PacketType.HISTORY, {"changed_after": 1}, ("changed_after",)),
    (codec.decode_client, PacketType.EDIT, {"room": "r", "seq": 1, "text": "t"}, ("seq",)),
    (codec.decode_client, PacketType.DELETE, {"room": "r", "seq": 1}, ("seq",)),
    (codec.decode_client, PacketType.REACT, {"room": "r", "seq": 1, "emoji": "x"}, ("seq",)),
    (
        codec.decode_server,
        PacketType.MESSAGE,
        {"seq": 1, "ts": 1.0, "from": "a", "text": "t", "rev": 1},
        ("rev",),
    ),
    (
        codec.decode_server,
        PacketType.MESSAGE,
        {"seq": 1, "ts": 1.0, "from": "a", "text": "t", "reply": {"seq": 1}},
        ("reply", "seq"),
    ),
    (
        codec.decode_server,
        PacketType.CHANGED,
        {"room": "r", "kind": "edit", "by": "a", "message": {"seq": 1, "ts": 1.0, "from": "a", "text": "t"}},
        ("message", "seq"),
    ),
    (codec.decode_server, PacketType.HISTORY_PAGE, {"messages": [], "more": False, "rev": 1}, ("rev",)),
    (
        codec.decode_server,
        PacketType.ROOM,
        {"room": "r", "topic": "", "members": [], "history": [], "rev": 1},
        ("rev",),
    ),
    (codec.decode_server, PacketType.ROOM, None, ("limit",)),
    (codec.decode_client, PacketType.MODERATE, {"room": "r", "op": "mode", "limit": 1}, ("limit",)),
    (
        codec.decode_server,
        PacketType.FILES_TOKEN,
        {"token": "t", "expires": 1.0, "url": "/files", "max_upload": 1},
        ("max_upload",),
    ),
    (
        codec.decode_server,
        PacketType.MESSAGE,
        {
            "seq": 1,
            "ts": 1.0,
            "from": "a",
            "text": "",
            "files": [{"id": "i", "name": "n", "size": 1, "type": "t", "width": 1, "height": 1}],
        },
        ("files", 0, "size"),
    ),
    (codec.decode_server, PacketType.MESSAGE, None, ("files", 0, "width")),
    (codec.decode_server, PacketType.MESSAGE, None, ("files", 0, "height")),
    (codec.decode_client, PacketType.HISTORY, {"around": 1}, ("around",)),
    (codec.decode_client, PacketType.SEARCH, {"words": "w", "limit": 1}, ("limit",)),
    (codec.decode_client, PacketType.MEMBERS, {"room": "r", "limit": 1}, ("limit",)),
    (
        codec.decode_server,
        PacketType.MEMBER_PAGE,
        {"room": "r", "members": [{"id": 1, "nick": "n"}], "count": 1},
        ("count",),
    ),
    (codec.decode_server, PacketType.MEMBER_PAGE, None, ("members", 0, "id")),
    (codec.decode_server, PacketType.COUNT, {"room": "r", "members": 1}, ("members",)),
    (
        codec.decode_server,
        PacketType.ROOM,
        {"room": "r", "topic": "", "members": [], "history": [], "count": 1},
        ("count",),
    ),
    (
        codec.decode_server,
        PacketType.RESULTS,
        {
            "hits": [{"room": "r", "seq": 1, "from": "a", "ts": 1.0, "snippet": "s", "marks": []}],
            "more": False,
        },
        ("hits", 0, "seq"),
    ),
    (
        codec.decode_server,
        PacketType.RESULTS,
        {
            "hits": [{"room": "r", "seq": 1, "from": "a", "ts": 1.0, "snippet": "s", "marks": [[0, 1]]}],
            "more": False,
        },
        ("hits", 0, "marks", 0, 0),
    ),
]


def _with(body: dict, path: tuple, value) -> dict:
    body = json.loads(json.dumps(body))
    where = body
    for step in path[:-1]:
        where = where[step]
    where[path[-1]] = value
    return body


class IntegerRanges(SynchronousTestCase):
    """Integers are signed 64-bit: anything outside is bad_packet, never a
    number that overflows a store or a client."""

    def cases(self):
        body = None
        for decode, kind, given_body, path in INTEGER_FIELDS:
            body = given_body if given_body is not None else body
            yield decode, kind, body, path

    def test_every_integer_field_refuses_values_outside_64_bits(self):
        for decode, kind, body, path in self.cases():
            for value in (codec.INT_MAX + 1, codec.INT_MIN - 1, 2**200, -(2**200)):
                payload = bytes([kind]) + json.dumps(_with(body, path, value) | {"ref": "r"}).encode()
                with self.assertRaises(ProtocolError, msg=(kind, path, value)) as caught:
                    decode(payload)
                self.assertEqual(caught.exception.code, ErrorCode.BAD_PACKET, (kind, path))
                self.assertIn("out of range", caught.exception.message)
                self.assertEqual(caught.exception.ref, "r")

    def test_every_integer_field_accepts_the_64_bit_extremes(self):
        for decode, kind, body, path in self.cases():
            for value in (codec.INT_MAX, codec.INT_MIN, 0):
                decode(bytes([kind]) + json.dumps(_with(body, path, value)).encode())

    def test_the_table_covers_every_integer_field(self):
        """A new integer field without a case here fails this test."""
        covered = {(kind, path[0]) for _, kind, _, path in INTEGER_FIELDS}
        nested = (
            "Peer",
            "Message",
            "Quote",
            "RoomInfo",
            "PendingInfo",
            "SessionInfo",
        )  # objects with integer fields
        for cls in (*codec.CLIENT_PACKETS, *codec.SERVER_PACKETS):
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                text = str(hints[f.name])
                if "int" in text or any(name in text for name in nested):
                    key = f.metadata.get("json", f.name)
                    self.assertIn((cls.TYPE, key), covered, f"{cls.__name__}.{f.name} has no range test")


class CachedFragments(SynchronousTestCase):
    """The fragments the server caches and splices encode exactly as encode() does."""

    @given(messages, refs)
    def test_message_json_and_with_ref(self, message, ref):
        packet = codec.MessagePacket(message.seq, message.ts, message.sender, message.text, ref)
        spliced = codec.encode_json(PacketType.MESSAGE, codec.with_ref(codec.message_json(message), ref))
        self.assertEqual(spliced, codec.encode(packet))

    @given(messages, st.one_of(st.none(), texts), texts)
    def test_version_2_message_names_its_room(self, message, ref, room):
        packet = codec.MessagePacket(message.seq, message.ts, message.sender, message.text, ref, room)
        spliced = codec.with_room(codec.with_ref(codec.message_json(message), ref), room)
        self.assertEqual(codec.encode_json(PacketType.MESSAGE, spliced), codec.encode(packet))

    @given(st.integers(min_value=0, max_value=2**53), st.sampled_from(["connecting", "gone"]))
    def test_pending_payload(self, id, state):
        self.assertEqual(codec.pending_payload(id, state), codec.encode(codec.Pending(id, state)))

    @given(st.lists(st.builds(codec.Peer, ints, texts), max_size=5), st.lists(messages, max_size=5), texts)
    def test_room_state_payload(self, members, history, topic):
        state = codec.RoomState("r", topic, members, history, "j1")
        spliced = codec.room_state_payload(
            {"room": "r", "topic": topic, "ref": "j1"},
            [codec.peer_json(p.id, p.nick) for p in members],
            [codec.message_json(m) for m in history],
        )
        self.assertEqual(codec.decode_server(spliced), state)

    @given(st.lists(st.builds(codec.Peer, ints, texts), max_size=5), st.lists(messages, max_size=5), ints)
    def test_welcome_payload(self, peers, history, id):
        welcome = codec.Welcome("ann", id, "tok", "srv", "motd", peers, [1, 2], history, {"max_frame": 65536})
        body = {"nick": "ann", "id": id, "resume": "tok", "server": "srv", "motd": "motd", "pending": [1, 2]}
        body["limits"] = {"max_frame": 65536}
        spliced = codec.welcome_payload(
            body, [codec.peer_json(p.id, p.nick) for p in peers], [codec.message_json(m) for m in history]
        )
        self.assertEqual(codec.decode_server(spliced), welcome)
        self.assertEqual(json.loads(spliced[1:]), json.loads(codec.encode(welcome)[1:]))
        # The fields every WELCOME has alike, spliced in encoded once:
        fixed = codec.dumps({k: body.pop(k) for k in ("server", "motd", "limits")})[1:-1]
        peers_json = [codec.peer_json(p.id, p.nick) for p in peers]
        history_json = [codec.message_json(m) for m in history]
        self.assertEqual(
            json.loads(codec.welcome_payload(body, peers_json, history_json, fixed)[1:]),
            json.loads(spliced[1:]),
        )


class ConversationFragments(SynchronousTestCase):
    def test_message_json_of_a_changed_message_is_what_the_encoder_writes(self):
        """Section 19's fields are spliced by hand too (a changed message is
        encoded for every CHANGED): the same bytes as the generic encoder."""
        import random

        for seed in range(500):
            r = random.Random(seed)
            m = codec.Message(
                r.randint(1, 10**6),
                r.random() * 1e9,
                r.choice(["a", 'ü"x', "b\\"]),
                r.choice(["t", 'é\n"', "😀", ""]),
                None,
                r.choice([None, {"op": "kick", "target": "x"}]),
                r.choice([None, codec.Quote(3, "a", 't"x'), codec.Quote(4, deleted=True)]),
                r.choice([None, 1.5, 1764000000.123456]),
                r.choice([None, True]),
                r.choice([None, 'car"ol']),
                r.choice([None, [codec.Reaction("👍", ["a", 'b"']), codec.Reaction(":+1:", ["c"])]]),
                r.choice([None, 7]),
            )
            self.assertEqual(codec.message_json(m), codec.dumps(codec.body_of(m)), m)
