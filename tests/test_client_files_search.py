"""The client session's files and search (protocol sections 20, 21), with no
Qt: upload tokens asked once and kept until near their expiry, SAY with
files, SEARCH and its answers or refusals, and HISTORY around a hit."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from qtclient.session_machine import TOKEN_MARGIN, FilesUnavailable
from tests.test_client_session import Harness, message, room, welcome


def connected() -> tuple[Harness, object, object]:
    h = Harness()
    protocol, transport = h.accept()
    h.serve(protocol, welcome(), room(history=[message(60), message(61)], ref="join:general"))
    h.sent(transport)
    return h, protocol, transport


def token(expires: float = 600.0, value: str = "t" * 43) -> codec.FilesToken:
    return codec.FilesToken(value, expires, "/files", 1000, "files")


class FileTokens(SynchronousTestCase):
    def test_one_files_request_answers_every_caller_and_the_token_is_kept(self):
        h, protocol, transport = connected()
        first, second = h.session.files_token(), h.session.files_token()
        self.assertEqual(h.sent(transport), [codec.Files(ref="files")], "one FILES for both")
        h.serve(protocol, token())
        self.assertEqual(self.successResultOf(first).token, "t" * 43)
        self.assertEqual(self.successResultOf(second).token, "t" * 43)
        self.assertEqual(self.successResultOf(h.session.files_token()).token, "t" * 43)
        self.assertEqual(h.sent(transport), [], "a token with time left is used again")

    def test_a_token_near_its_expiry_or_refused_by_http_is_asked_again(self):
        h, protocol, transport = connected()
        d = h.session.files_token()
        h.serve(protocol, token(expires=11 + TOKEN_MARGIN))
        self.successResultOf(d)
        h.sent(transport)
        h.clock.advance(10)
        self.successResultOf(h.session.files_token())
        self.assertEqual(h.sent(transport), [])
        h.clock.advance(1)
        h.session.files_token()
        self.assertEqual(h.sent(transport), [codec.Files(ref="files")], "too close to its expiry")
        h.serve(protocol, token(expires=10_000, value="u" * 43))
        fresh = h.session.files_token(fresh=True)
        self.assertEqual(h.sent(transport), [codec.Files(ref="files")], "after a 401: a new one anyway")
        h.serve(protocol, token(expires=10_000, value="v" * 43))
        self.assertEqual(self.successResultOf(fresh).token, "v" * 43)

    def test_a_server_without_files_fails_the_callers_with_its_words(self):
        h, protocol, _transport = connected()
        d = h.session.files_token()
        h.serve(protocol, codec.Error("no_files", "files are not available", ref="files"))
        failure = self.failureResultOf(d, FilesUnavailable)
        self.assertEqual((failure.value.code, failure.value.message), ("no_files", "files are not available"))
        self.assertEqual(h.events.named("error_received"), [], "the caller says it, not the session")

    def test_offline_fails_at_once_and_a_drop_fails_the_waiting_and_forgets_the_token(self):
        h, protocol, transport = connected()
        d = h.session.files_token()
        h.serve(protocol, token(expires=10_000))
        self.successResultOf(d)
        waiting = h.session.files_token(fresh=True)
        h.drop(protocol)
        self.assertEqual(self.failureResultOf(waiting, FilesUnavailable).value.code, "offline")
        self.assertEqual(
            self.failureResultOf(h.session.files_token(), FilesUnavailable).value.code, "offline"
        )
        h.clock.advance(1)
        protocol, transport = h.accept()
        h.serve(protocol, welcome(), room(ref="join:general"))
        h.sent(transport)
        h.session.files_token()
        self.assertEqual(h.sent(transport), [codec.Files(ref="files")], "the old session's token is not used")

    def test_say_with_files_carries_their_ids_and_may_have_no_text(self):
        h, _protocol, transport = connected()
        ref = h.session.say("", "general", files=["A" * 22, "B" * 22])
        (say,) = h.sent(transport)
        self.assertEqual(say, codec.Say("", ref, "general", None, files=["A" * 22, "B" * 22]))
        encoded = codec.encode_frame(say)
        self.assertIn(b'"files":["' + b"A" * 22, encoded)
        h.session.say("plain")
        self.assertIsNone(h.sent(transport)[0].files, "no files: no field")

    def test_a_message_with_files_lost_with_the_link_is_settled_by_its_files_too(self):
        h, protocol, transport = connected()
        with_files = h.session.say("", "general", files=["A" * 22])
        plain = h.session.say("", "general", files=["B" * 22])
        h.sent(transport)
        h.drop(protocol)
        h.clock.advance(1)
        protocol, transport = h.accept()
        h.serve(protocol, welcome())
        stored = codec.Message(62, 62.0, "ann", "", files=[codec.File("B" * 22, "b.png", 1, "image/png")])
        h.serve(protocol, room(history=[message(61), stored], ref="join:general"))
        self.assertEqual(
            h.events.named("send_confirmed"), [(plain, 62)], "matched by its files, not its text"
        )
        self.assertIn(with_files, h.session._outgoing, "the other is sent again")


class Searching(SynchronousTestCase):
    def test_search_sends_its_filters_and_results_come_back_with_the_query(self):
        h, protocol, transport = connected()
        ref = h.session.search("deploy*", room="general", sender="bob", limit=10)
        (query,) = h.sent(transport)
        self.assertEqual(query, codec.Search("deploy*", "general", "bob", limit=10, ref=ref))
        hit = codec.Hit("general", 2, "bob", 2.0, "we deploy today", [[3, 6]])
        h.serve(protocol, codec.Results([hit], True, "next", ref))
        ((got_ref, got_query, results),) = h.events.named("results_received")
        self.assertEqual((got_ref, got_query, results.hits, results.page), (ref, query, [hit], "next"))
        h.serve(protocol, codec.Results([hit], False, None, ref))
        self.assertEqual(len(h.events.named("results_received")), 1, "an answer to no question is dropped")

    def test_the_next_page_sends_the_page_back_and_no_empty_filters(self):
        h, _protocol, transport = connected()
        ref = h.session.search("x", room="", sender="", page="p2")
        self.assertEqual(h.sent(transport), [codec.Search("x", None, None, page="p2", ref=ref)])

    def test_a_refused_search_is_reported_for_its_ref_not_as_a_general_error(self):
        h, protocol, _transport = connected()
        ref = h.session.search("x" * 201)
        h.serve(protocol, codec.Error("bad_search", "at most 200 characters", ref=ref))
        self.assertEqual(h.events.named("search_failed"), [(ref, "bad_search", "at most 200 characters")])
        self.assertEqual(h.events.named("error_received"), [])

    def test_a_search_waiting_when_the_link_drops_fails_and_offline_sends_nothing(self):
        h, protocol, _transport = connected()
        ref = h.session.search("x")
        h.drop(protocol)
        self.assertEqual(h.events.named("search_failed")[0][:2], (ref, "offline"))
        self.assertIsNone(h.session.search("x"))


class HistoryAround(SynchronousTestCase):
    def test_a_page_around_a_hit_is_told_apart_from_older_pages_asked_before_it(self):
        h, protocol, transport = connected()
        self.assertTrue(h.session.request_older("general"))
        self.assertTrue(h.session.open_around("general", 40))
        older, around = h.sent(transport)
        self.assertEqual(older.before, 60)
        self.assertEqual(around, codec.HistoryRequest(limit=50, room="general", around=40))
        h.serve(protocol, codec.HistoryPage([], False, "general"))
        page = [message(seq) for seq in range(35, 46)]
        h.serve(protocol, codec.HistoryPage(page, True, "general", newer=True))
        self.assertEqual(h.events.named("history_received")[-1][3], "before")
        ((room_name, seq, messages, more),) = h.events.named("history_around")
        self.assertEqual(
            (room_name, seq, [m.seq for m in messages], more), ("general", 40, list(range(35, 46)), True)
        )

    def test_not_in_the_room_or_offline_nothing_is_asked(self):
        h, protocol, transport = connected()
        self.assertFalse(h.session.open_around("elsewhere", 3))
        h.drop(protocol)
        self.assertFalse(h.session.open_around("general", 3))
        self.assertEqual(h.sent(transport), [])
