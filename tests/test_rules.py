"""Nick and text rules."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chatproto.codec import ErrorCode, ProtocolError
from chatproto.rules import clean_reason, nick_key, normalise_nick, validate_text


class Nicks(SynchronousTestCase):
    def test_valid(self):
        for nick in ("a", "Zoë", "名前", "user_1", "a-b.c", "x" * 32, "é", "e\u0301", "٣٤"):
            self.assertEqual(normalise_nick(nick), nick if nick != "e\u0301" else "é")

    def test_nfkc_form_keeps_case(self):
        self.assertEqual(normalise_nick("Ａlice"), "Alice")
        self.assertEqual(normalise_nick("ﬁsh"), "fish")

    def test_length_counts_after_nfkc(self):
        self.assertEqual(normalise_nick("ﬁ" * 16), "fi" * 16)
        with self.assertRaises(ProtocolError):
            normalise_nick("ﬁ" * 17)  # 17 characters, 34 after NFKC

    def test_invalid(self):
        for nick in ("", "x" * 33, "a b", "a\tb", "a!", "@x", "\u0301a", "💬", "a\u200bb", "a\ud800"):
            with self.assertRaises(ProtocolError) as caught:
                normalise_nick(nick)
            self.assertEqual(caught.exception.code, ErrorCode.BAD_NICK, repr(nick))

    def test_key_folds_case_and_width(self):
        self.assertEqual(nick_key("Alice"), nick_key("ALICE"))
        self.assertEqual(nick_key("Alice"), nick_key("Ａlice"))
        self.assertEqual(nick_key("Straße"), nick_key("STRASSE"))
        self.assertNotEqual(nick_key("alice"), nick_key("alicia"))

    @given(st.text(max_size=40))
    def test_normalise_accepts_or_says_bad_nick(self, nick):
        try:
            form = normalise_nick(nick)
        except ProtocolError as e:
            self.assertEqual(e.code, ErrorCode.BAD_NICK)
        else:
            self.assertEqual(normalise_nick(form), form, "the registered form is stable")


class Text(SynchronousTestCase):
    def test_valid(self):
        for text in ("x", "line\nline", "tab\there", "ünïcødé 😀", "x" * 4000):
            self.assertEqual(validate_text(text, 4000), text)

    def test_invalid(self):
        for text in ("", "x" * 4001, "\r", "a\x00", "\x1b[31m", "\x7f", "\x9f", "\ud800"):
            with self.assertRaises(ProtocolError) as caught:
                validate_text(text, 4000)
            self.assertEqual(caught.exception.code, ErrorCode.BAD_TEXT, repr(text))

    def test_limit_is_in_code_points(self):
        self.assertEqual(validate_text("😀" * 10, max_text=10), "😀" * 10)

    def test_quit_reason_is_repaired(self):
        self.assertIsNone(clean_reason(None, 4000))
        self.assertIsNone(clean_reason("\x07", 4000))
        self.assertEqual(clean_reason("bye\r\n", 4000), "bye ")
        self.assertEqual(clean_reason("a\nb\tc", 4000), "a b c")  # one line, as IRC shows it
        self.assertEqual(clean_reason("x" * 50, max_text=10), "x" * 10)
