"""Search (docs/protocol.md, section 21): SEARCH and RESULTS, the index kept
with the history, HISTORY around a message. On StringTransport and
task.Clock, against the SQLite log (searches run at once there)."""

from __future__ import annotations

import os
import sqlite3
import tempfile

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.backends import fts
from chatproto.backends.eventlog import Draft, author_of
from chatproto.backends.sqlite import SQLiteLog
from chatproto.codec import ErrorCode
from tests.harness import Server, result
from tests.test_accounts import registered
from tests.test_conversations import said, v2


def search(peer, words: str, **fields) -> codec.Results | codec.Error:
    """SEARCH; the one answer it got (RESULTS or ERROR)."""
    peer.send(codec.Search(words, ref="s", **fields))
    answers = [p for p in peer.received() if isinstance(p, (codec.Results, codec.Error))]
    assert len(answers) == 1, answers
    return answers[0]


def found(peer, words: str, **fields) -> list[int]:
    """The seqs a SEARCH finds, newest first."""
    results = search(peer, words, **fields)
    assert isinstance(results, codec.Results), results
    return [hit.seq for hit in results.hits]


def every_hit(peer, words: str) -> list[int]:
    """Every seq a search finds, page after page (at most 20 pages)."""
    seqs: list[int] = []
    page = None
    for _ in range(20):
        results = search(peer, words, limit=50, page=page)
        seqs += [h.seq for h in results.hits]
        if not results.more:
            return seqs
        page = results.page
    raise AssertionError("more than 20 pages")


def code(answer) -> str:
    assert isinstance(answer, codec.Error), answer
    return answer.code


class Words(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.ann, self.bob = v2(self.server, "ann", "bob")
        for text in (
            "the deployment failed at noon",
            "Le CAFÉ est fermé",
            "a red fox jumped",
            "the fox was red",
            "deploy again tomorrow",
        ):
            said(self.ann, text)
        self.bob.received()

    def test_a_word_is_found_whole_newest_first_with_its_place_and_marks(self):
        results = search(self.bob, "fox")
        self.assertIsInstance(results, codec.Results)
        self.assertEqual([h.seq for h in results.hits], [4, 3])
        hit = results.hits[1]
        self.assertEqual((hit.room, hit.sender, hit.snippet), ("general", "ann", "a red fox jumped"))
        self.assertEqual(hit.ts, self.server.stored()[2].ts)
        self.assertEqual(hit.marks, [[6, 3]])
        self.assertEqual((results.more, results.page, results.ref), (False, None, "s"))
        self.assertEqual(found(self.bob, "fo"), [])  # whole words only

    def test_case_and_accents_are_ignored_both_ways(self):
        self.assertEqual(found(self.bob, "cafe"), [2])
        self.assertEqual(found(self.bob, "FERME"), [2])
        self.assertEqual(found(self.bob, "Café"), [2])

    def test_a_trailing_star_matches_any_word_it_starts(self):
        self.assertEqual(found(self.bob, "deplo*"), [5, 1])
        results = search(self.bob, "deplo*")
        self.assertEqual(results.hits[1].marks, [[4, 10]])

    def test_a_phrase_matches_its_words_in_that_order(self):
        self.assertEqual(found(self.bob, '"red fox"'), [3])
        self.assertEqual(found(self.bob, '"fox red"'), [])
        self.assertEqual(search(self.bob, '"red fox"').hits[0].marks, [[2, 7]])

    def test_every_word_must_be_in_the_message(self):
        self.assertEqual(found(self.bob, "fox red"), [4, 3])
        self.assertEqual(found(self.bob, "fox noon"), [])

    def test_query_syntax_is_only_words(self):
        """What FTS5 would read as syntax is a word here, or nothing."""
        said(self.ann, "use NEAR or AND, not col:x")
        self.bob.received()
        for words in (
            "NEAR(fox red)",
            "fox OR noon",
            "fox AND",
            '"unclosed fox',
            "col:x",
            "-fox",
            "^fox",
            "fox)",
        ):
            answer = search(self.bob, words)
            self.assertIsInstance(answer, codec.Results, words)
        self.assertEqual(found(self.bob, "fox OR noon"), [])  # OR is a word, not an operator
        self.assertEqual(found(self.bob, "near and"), [6])


class Pages(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.ann, self.bob = v2(self.server, "ann", "bob")
        for i in range(5):
            said(self.ann, f"ping number {i}")
            self.server.clock.advance(1)
        self.bob.received()

    def test_pages_follow_each_other_newest_first_and_end(self):
        first = search(self.bob, "ping", limit=2)
        self.assertEqual(([h.seq for h in first.hits], first.more), ([5, 4], True))
        second = search(self.bob, "ping", limit=2, page=first.page)
        self.assertEqual(([h.seq for h in second.hits], second.more), ([3, 2], True))
        third = search(self.bob, "ping", limit=2, page=second.page)
        self.assertEqual(([h.seq for h in third.hits], third.more, third.page), ([1], False, None))

    def test_a_message_said_after_the_first_page_waits_for_a_new_search(self):
        first = search(self.bob, "ping", limit=2)
        said(self.ann, "ping again")
        self.bob.received()
        second = search(self.bob, "ping", limit=10, page=first.page)
        self.assertEqual([h.seq for h in second.hits], [3, 2, 1])
        self.assertEqual(found(self.bob, "ping", limit=1), [6])

    def test_limit_is_clamped(self):
        self.assertEqual(len(search(self.bob, "ping", limit=0).hits), 1)
        result(self.server.store.append([Draft(9.0, "ann", f"ping {i}") for i in range(60)]))
        self.assertEqual(len(search(self.bob, "ping", limit=1000).hits), fts.MAX_LIMIT)
        self.assertEqual(len(search(self.bob, "ping").hits), fts.DEFAULT_LIMIT)

    def test_a_page_not_given_or_given_for_another_search_is_bad_search(self):
        first = search(self.bob, "ping", limit=2)
        self.assertEqual(code(search(self.bob, "pong", page=first.page)), ErrorCode.BAD_SEARCH)
        self.assertEqual(
            code(search(self.bob, "ping", page=first.page, room="general")), ErrorCode.BAD_SEARCH
        )
        self.assertEqual(
            code(search(self.bob, "ping", page=("y" if first.page[0] == "x" else "x") + first.page[1:])),
            ErrorCode.BAD_SEARCH,
        )
        self.assertEqual(code(search(self.bob, "ping", page="not base64 at all!")), ErrorCode.BAD_SEARCH)
        self.assertEqual(code(search(self.bob, "ping", page="")), ErrorCode.BAD_SEARCH)
        # the same search with another page size goes on
        self.assertEqual([h.seq for h in search(self.bob, "ping", page=first.page, limit=1).hits], [3])


class Filters(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.ann, self.bob = v2(self.server, "ann", "bob")
        self.bob.join("den")
        self.ann.join("den")
        said(self.ann, "release notes")  # general 1, t=0
        self.server.clock.advance(10)
        said(self.bob, "release today", room="den")  # den 1, t=10
        self.server.clock.advance(10)
        said(self.bob, "release done")  # general 2, t=20
        self.ann.received()
        self.bob.received()

    def test_without_room_every_room_of_the_session_newest_first(self):
        results = search(self.ann, "release")
        self.assertEqual(
            [(h.room, h.seq) for h in results.hits], [("general", 2), ("den", 1), ("general", 1)]
        )

    def test_room_from_since_until(self):
        self.assertEqual(found(self.ann, "release", room="den"), [1])
        self.assertEqual(found(self.ann, "release", sender="BOB"), [2, 1])
        self.assertEqual(found(self.ann, "release", sender="bob", room="general"), [2])
        self.assertEqual(found(self.ann, "release", since=10), [2, 1])
        self.assertEqual(found(self.ann, "release", until=10), [1])
        self.assertEqual(found(self.ann, "release", since=10, until=20), [1])
        self.assertEqual(found(self.ann, "release", sender="nobody"), [])


class ListedThenIndexed(SynchronousTestCase):
    """New messages are listed, and go into FTS5 sqlite.PENDING at a time:
    a search reads both, and a change reaches either."""

    def test_found_wherever_they_are_and_changes_reach_both(self):
        from chatproto.backends.sqlite import PENDING

        server = Server()
        (ann,) = v2(server, "ann")
        count = PENDING + PENDING // 2
        mine = author_of(None, ann.connection.session.id, server.hub.registry.epoch)
        drafts = [Draft(0.0, "ann", f"alpha {i}", author=mine) for i in range(count)]
        result(server.store.append(drafts[:PENDING]))
        result(server.store.append(drafts[PENDING:]))
        listed = server.store._db.execute("SELECT count(*) FROM search_pending").fetchone()[0]
        self.assertEqual(listed, count - PENDING)  # the first PENDING went into FTS5 together
        seqs = every_hit(ann, "alpha")
        self.assertEqual(seqs, list(range(count, 0, -1)))
        ann.send(codec.Edit("general", 2, "beta in fts"))
        ann.send(codec.Delete("general", 3))
        ann.send(codec.Edit("general", count, "beta listed"))
        ann.send(codec.Delete("general", count - 1))
        ann.received()
        self.assertEqual(sorted(found(ann, "beta")), [2, count])
        alpha = every_hit(ann, "alpha")
        self.assertEqual(alpha, [seq for seq in range(count, 0, -1) if seq not in (2, 3, count, count - 1)])

    def test_each_message_is_encoded_when_listed_not_all_at_the_flush(self):
        """Encoding the whole list in the append that fills it held the
        reactor for one long turn every PENDING messages."""
        from chatproto.backends.sqlite import PENDING

        server = Server()
        (ann,) = v2(server, "ann")
        mine = author_of(None, ann.connection.session.id, server.hub.registry.epoch)
        drafts = [Draft(0.0, "ann", f"gamma {i}", author=mine) for i in range(PENDING)]
        result(server.store.append(drafts[:-1]))
        index = server.store.index
        encoded: list[str] = []
        encode = index.encoder.text
        index.encoder.text = lambda text: encoded.append(text) or encode(text)  # type: ignore[method-assign]
        result(server.store.append(drafts[-1:]))
        listed = server.store._db.execute("SELECT count(*) FROM search_pending").fetchone()[0]
        self.assertEqual((listed, encoded), (0, [f"gamma {PENDING - 1}"]))
        self.assertEqual(every_hit(ann, "gamma"), list(range(PENDING, 0, -1)))

    def test_an_edit_rolled_back_leaves_the_old_text_indexed(self):
        """The edit's new words were encoded when it listed the message
        again; the rollback brought the old text back to the list."""
        db = sqlite3.connect(":memory:", isolation_level=None)
        db.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, ts, sender, text)")
        index = fts.Index("docs", pending=3)  # the list's count goes on through the rollback
        index.open(db)
        db.execute("INSERT INTO docs VALUES (1, 0, 'ann', 'old words')")
        index.add(db, [(1, "old words")])
        db.execute("BEGIN")
        index.remove(db, 1, "old words")
        db.execute("UPDATE docs SET text = 'new words' WHERE id = 1")
        index.add(db, [(1, "new words")])
        db.execute("ROLLBACK")
        db.execute("INSERT INTO docs VALUES (2, 0, 'ann', 'other')")
        index.add(db, [(2, "other")])  # the list is full: the flush

        def hits(word: str) -> list[tuple[int]]:
            match = fts.match_query(index.encoder, fts.parse_words(word))
            return db.execute("SELECT rowid FROM search WHERE search MATCH ?", (match,)).fetchall()

        self.assertEqual(db.execute("SELECT count(*) FROM search_pending").fetchone(), (0,))
        self.assertEqual((hits("old"), hits("new")), ([(1,)], []))


class WhatIsNeverFound(SynchronousTestCase):
    def test_rooms_the_session_is_not_in(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        bob.join("den")
        said(bob, "secret plans", room="den")
        bob.received()
        self.assertEqual(found(ann, "secret"), [])
        self.assertEqual(code(search(ann, "secret", room="den")), ErrorCode.NOT_A_MEMBER)
        self.assertEqual(found(bob, "secret"), [1])
        bob.send(codec.Part("den"))
        bob.received()
        self.assertEqual(found(bob, "secret"), [])  # a guest's rooms are the ones it is in

    def test_deleted_never_edited_by_its_new_text_only(self):
        server = Server()
        (ann,) = v2(server, "ann")
        said(ann, "typo here")
        said(ann, "gone soon")
        ann.send(codec.Edit("general", 1, "fixed here"))
        ann.send(codec.Delete("general", 2))
        ann.received()
        self.assertEqual(found(ann, "typo"), [])
        self.assertEqual(found(ann, "fixed"), [1])
        self.assertEqual(found(ann, "here"), [1])
        self.assertEqual(found(ann, "gone"), [])
        ann.send(codec.Edit("general", 1, "fixed twice"))
        ann.received()
        self.assertEqual(found(ann, "here"), [])
        self.assertEqual(found(ann, "twice"), [1])

    def test_moderation_records_are_not_searched_but_notices_are(self):
        server = Server()
        ann = registered(server, "ann")
        ann.join("den")
        bob = v2(server, "bob")[0]
        bob.join("den")
        bob.send(codec.Say("heads up", None, "den", notice=True))
        ann.send(codec.Moderate("den", "kick", "bob", reason="spamming heads"))
        ann.received()
        self.assertEqual(found(ann, "spamming"), [])
        self.assertEqual(found(ann, "heads"), [1])

    def test_an_account_finds_its_direct_conversations(self):
        server = Server()
        ann = registered(server, "ann")
        bob = registered(server, "bob")
        ann.send(codec.Open(["bob"]))
        ann.received()
        bob.received()
        said(ann, "just between us", room="@ann+bob")
        bob.received()
        hits = search(bob, "between").hits
        self.assertEqual([(h.room, h.seq) for h in hits], [("@ann+bob", 1)])
        self.assertEqual(found(bob, "between", room="@ann+bob"), [1])


class Checks(SynchronousTestCase):
    """The order of 21.2: not_logged_in, unknown_type, rate_limited,
    bad_search, then bad_room, no_such_room, not_a_member."""

    def test_not_logged_in_then_version_1(self):
        server = Server()
        peer = server.peer()
        peer.send(codec.Search("x", ref="s"))
        self.assertEqual(peer.error().code, ErrorCode.NOT_LOGGED_IN)
        (old,) = server.logged_in("old", version=1)
        old.send_payload(codec.encode(codec.Search("", ref="s")))
        self.assertEqual(old.error().code, ErrorCode.UNKNOWN_TYPE)

    def test_rate_limited_before_bad_search(self):
        server = Server(burst=1, rate=0.001)
        (ann,) = v2(server, "ann")
        self.assertEqual(found(ann, "x"), [])
        self.assertEqual(code(search(ann, "")), ErrorCode.RATE_LIMITED)

    def test_bad_search(self):
        server = Server()
        (ann,) = v2(server, "ann")
        for words in ("", "   ", "!!! ...", "x" * 201, '""'):
            self.assertEqual(code(search(ann, words)), ErrorCode.BAD_SEARCH, words)
        self.assertIsInstance(search(ann, "x" * 200), codec.Results)

    def test_bad_search_before_the_room_then_the_room(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        bob.join("den")
        self.assertEqual(code(search(ann, "", room="no good")), ErrorCode.BAD_SEARCH)
        self.assertEqual(code(search(ann, "x", room="no good")), ErrorCode.BAD_ROOM)
        self.assertEqual(code(search(ann, "x", room="nowhere")), ErrorCode.NO_SUCH_ROOM)
        self.assertEqual(code(search(ann, "x", room="den")), ErrorCode.NOT_A_MEMBER)

    def test_a_server_without_search_says_no_search(self):
        server = Server(store=SQLiteLog(":memory:", search=False))
        (ann,) = v2(server, "ann")
        said(ann, "hello")
        self.assertEqual(code(search(ann, "hello")), ErrorCode.NO_SEARCH)

    def test_hits_are_charged_to_the_fair_share(self):
        server = Server(packet_burst=200, packet_rate=1)
        (ann,) = v2(server, "ann")
        result(server.store.append([Draft(1.0, "ann", f"word {i}") for i in range(50)]))
        budget = ann.connection  # the policy is its own budget (core/budget.py Spender)
        before = budget.spend(0, server.clock.seconds())
        self.assertEqual(before, 0)
        tokens = budget._tokens
        self.assertEqual(len(search(ann, "word", limit=50).hits), 50)
        self.assertAlmostEqual(tokens - budget._tokens, 1 + 50 / 10)


class Around(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        (self.ann,) = v2(self.server, "ann")
        for i in range(1, 11):
            said(self.ann, f"m{i}")

    def page(self, **fields) -> codec.HistoryPage:
        self.ann.send(codec.HistoryRequest(room="general", **fields))
        return self.ann.only(codec.HistoryPage)

    def test_a_page_centred_on_a_seq(self):
        page = self.page(around=5, limit=4)
        self.assertEqual([m.seq for m in page.messages], [3, 4, 5, 6])
        self.assertEqual((page.more, page.newer), (True, True))

    def test_at_the_ends(self):
        page = self.page(around=1, limit=4)
        self.assertEqual([m.seq for m in page.messages], [1, 2, 3, 4])
        self.assertEqual((page.more, page.newer), (False, True))
        page = self.page(around=10, limit=4)
        self.assertEqual([m.seq for m in page.messages], [8, 9, 10])
        self.assertEqual((page.more, page.newer), (True, False))
        page = self.page(around=99, limit=4)
        self.assertEqual([m.seq for m in page.messages], [9, 10])
        self.assertEqual((page.more, page.newer), (True, False))

    def test_a_limit_of_one_is_the_message(self):
        page = self.page(around=5, limit=1)
        self.assertEqual(([m.seq for m in page.messages], page.more, page.newer), ([5], True, True))

    def test_around_with_before_or_after_is_bad_packet(self):
        self.ann.send(codec.HistoryRequest(before=5, room="general", around=5))
        self.assertEqual(self.ann.error().code, ErrorCode.BAD_PACKET)
        self.ann.send(codec.HistoryRequest(after=5, room="general", around=5))
        self.assertEqual(self.ann.error().code, ErrorCode.BAD_PACKET)

    def test_other_answers_have_no_newer(self):
        self.assertIsNone(self.page(limit=2).newer)


class Migration(SynchronousTestCase):
    def setUp(self):
        folder = tempfile.mkdtemp()
        self.addCleanup(lambda: [os.remove(os.path.join(folder, f)) for f in os.listdir(folder)])
        self.path = os.path.join(folder, "history.sqlite3")

    def test_a_history_without_the_index_gets_one_at_start(self):
        old = SQLiteLog(self.path, search=False)
        drafts = [Draft(float(i), "ann", f"note {i} {'even' if i % 2 == 0 else 'odd'}") for i in range(25)]
        drafts.append(Draft(30.0, "ann", "kicked for even", action={"op": "kick"}))
        result(old.append(drafts))
        old.close()
        log = SQLiteLog(self.path)
        self.assertEqual(log.index.state(log._db, "built"), "all")
        query = fts.Query(tuple(fts.parse_words("even")), ("general",), limit=50)
        hits = log._search(log._db, query).hits
        self.assertEqual([h.seq for h in hits], list(range(25, 0, -2)))
        log.close()

    def test_an_interrupted_build_goes_on_from_where_it_stopped(self):
        old = SQLiteLog(self.path, search=False)
        result(old.append([Draft(float(i), "ann", f"word{i}") for i in range(30)]))
        index = fts.Index("messages", "1")
        index.open(old._db)
        index.set_state(old._db, "built", 20 + 2**40)  # stopped after seq 20 of room 1
        old.close()
        log = SQLiteLog(self.path)
        for seq, expected in ((25, [25]), (5, [])):  # the first 20 were taken as indexed
            query = fts.Query(tuple(fts.parse_words(f"word{seq - 1}")), ("general",))
            self.assertEqual([h.seq for h in log._search(log._db, query).hits], expected)
        log.close()

    def test_an_index_made_with_the_earlier_table_keeps_answering(self):
        earlier = "fts5(text, content='', tokenize='unicode61 remove_diacritics 2')"
        log = SQLiteLog(self.path, search=False)
        result(log.append([Draft(1.0, "ann", "Deploy_v2 at NOON, again")]))
        log._db.execute(f"CREATE VIRTUAL TABLE search USING {earlier}")  # as earlier servers made it
        log._db.execute("CREATE TABLE search_state (key TEXT PRIMARY KEY, value)")
        log.close()
        log = SQLiteLog(self.path)  # built into that table
        result(log.append([Draft(2.0, "ann", f"deploy noon {i}") for i in range(300)]))  # past the list
        result(log.append([Draft(3.0, "ann", "Le CAFÉ, deployed")]))
        (table,) = log._db.execute("SELECT sql FROM sqlite_master WHERE name = 'search'").fetchone()
        self.assertIn(earlier, table)
        newest = [302, *range(301, 252, -1)]  # a page of 50
        for words, seqs in (("v2", [1]), ("deploy*", newest), ('"noon again"', [1]), ("cafe", [302])):
            query = fts.Query(tuple(fts.parse_words(words)), ("general",), limit=50)
            self.assertEqual([h.seq for h in log._search(log._db, query).hits], seqs, words)
        log.close()

    def test_search_turned_off_drops_the_index_and_back_on_builds_it(self):
        log = SQLiteLog(self.path)
        result(log.append([Draft(1.0, "ann", "first")]))
        log.close()
        off = SQLiteLog(self.path, search=False)
        result(off.append([Draft(2.0, "ann", "second")]))
        self.assertIsNone(off.search_key())
        off.close()
        on = SQLiteLog(self.path)
        query = fts.Query(tuple(fts.parse_words("first OR second")), ("general",))
        self.assertEqual(
            [h.seq for h in on._search(on._db, fts.Query(query.terms[:1], ("general",))).hits], [1]
        )
        query = fts.Query(tuple(fts.parse_words("second")), ("general",))
        self.assertEqual([h.seq for h in on._search(on._db, query).hits], [2])
        on.close()


class Snippets(SynchronousTestCase):
    def test_a_long_text_is_cut_around_the_first_match(self):
        text = " ".join(f"w{i}" for i in range(100)) + " needle " + " ".join(f"v{i}" for i in range(100))
        cut, marks = fts.snippet(text, fts.parse_words("needle"))
        self.assertLessEqual(len(cut), fts.SNIPPET)
        self.assertTrue(cut.startswith("…") and cut.endswith("…"))
        ((start, length),) = marks
        self.assertEqual(cut[start : start + length], "needle")
        self.assertNotIn(" …", cut)

    def test_a_short_text_is_whole(self):
        self.assertEqual(
            fts.snippet("Héllo there, hello", fts.parse_words("hello")),
            ("Héllo there, hello", [[0, 5], [13, 5]]),
        )

    def test_marks_count_code_points(self):
        _, marks = fts.snippet("🎉🎉 party time", fts.parse_words("party"))
        self.assertEqual(marks, [[3, 5]])

    @given(st.text(max_size=600), st.sampled_from(["a", "ab*", '"a b"', "é", "x y"]))
    def test_any_text_gives_a_snippet_within_bounds(self, text, words):
        cut, marks = fts.snippet(text, fts.parse_words(words))
        self.assertLessEqual(len(cut), fts.SNIPPET)
        for start, length in marks:
            self.assertTrue(0 <= start and length > 0 and start + length <= len(cut))


class Encoding(SynchronousTestCase):
    @given(st.text(alphabet=st.characters(max_codepoint=127), max_size=300))
    def test_an_ascii_text_is_encoded_as_its_words_are_found(self, text):
        encoder = fts.Encoder(b"a key")
        words = [encoder.token(word) for _, _, word in fts.tokens(text)]
        self.assertEqual(encoder.text(text), " ".join(words))

    def test_ascii_and_other_texts_encode_a_word_alike(self):
        encoder = fts.Encoder(b"a key")
        self.assertEqual(encoder.text("Cafe_2 x"), encoder.text("CAFÉ 2 x"))
        self.assertEqual(encoder.text("the fox"), encoder.text("thé fox"))
