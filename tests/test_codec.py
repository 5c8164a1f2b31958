"""The pure codec: round trips and every way a payload can be malformed."""

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.codec import ErrorCode, PacketType, ProtocolError

texts = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=60)
short = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
refs = st.none() | texts
ints = st.integers(min_value=-(2**53), max_value=2**53)
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
        for type_byte in (0x00, 0x08, 0x7F, PacketType.WELCOME, 0xFF):
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
