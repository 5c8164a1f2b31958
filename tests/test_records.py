"""Replication records: each kind of change survives its trip through a
room stream's entry, and an inbox note through its JSON."""

from __future__ import annotations

import json

from twisted.trial import unittest

from chatproto import codec
from chatproto.core import records


def _through_stream(record: records.Record) -> records.Record:
    """The entry as another node reads it: its kind, and its "d" parsed."""
    entry = record.entry("7")
    data = json.loads(entry["d"])
    return records.decode(entry["t"], record.room, data)


class RecordTests(unittest.TestCase):
    def test_each_kind_round_trips(self) -> None:
        for record in (
            records.MemberJoined("Lobby", 2**32 + 5, "Ann", "ann", True),
            records.MemberJoined("Lobby", 9, "bob/x", "bob/x", False),  # a key that needs escaping
            records.MemberLeft("Lobby", 9, "bob", "bob", "part", "bye"),
            records.MemberLeft("Lobby", 9, "bob", "bob", "connection_lost", None),
            records.TopicSet("Lobby", "news", "ann", 1700000000.25),
            records.TopicSet("Lobby", "", "ann", 1.0),
            records.RulesSet("Lobby", {"ops": ["ann"], "invite_only": True}, (3, 4)),
        ):
            with self.subTest(record=record):
                self.assertEqual(_through_stream(record), record)

    def test_a_join_entry_carries_the_member_for_snapshots(self) -> None:
        entry = records.MemberJoined("Lobby", 5, "Ann", "a b", True).entry("3")
        self.assertEqual((entry["id"], entry["key"]), ("5", "a%20b"))
        self.assertEqual(
            json.loads(entry["m"]), {"node": "3", "nick": "Ann", "key": "a%20b", "account": True}
        )

    def test_a_leave_entry_says_whether_the_room_always_exists(self) -> None:
        kept = records.MemberLeft("Lobby", 5, "ann", "ann", "part", None, permanent=True).entry("3")
        gone = records.MemberLeft("x", 5, "ann", "ann", "part", None).entry("3")
        self.assertEqual((kept["perm"], gone["perm"]), (1, 0))

    def test_an_unknown_kind_is_refused(self) -> None:
        with self.assertRaises(KeyError):
            records.decode("z", "Lobby", {})

    def test_inbox_notes_round_trip(self) -> None:
        private = codec.Private(12.5, "ann", "bob", "psst")
        told = records.SessionsTold(
            "2",
            7,
            [codec.PendingInfo(9, "10.0.0.1:5000", 1.5)],
            [codec.SessionInfo(2**32 + 3, "Ann", "10.0.0.2:6000", 2.5, ["den"], True, 2)],
        )
        for note in (
            records.Whispered(private),
            records.Moved("ann"),
            records.BansChanged(),
            records.SessionsAsked("3", 7),
            told,
            records.KickAsked("bob", 2**32 + 1, "Root", "root", True, None),
            records.HandoverAsked("4", 8, "ann"),
            records.HandoverTold("2", 8, True),
            records.RelayOpened("3", 2**32 + 5, "10.0.0.9", 5123, b'\x01{"nick":"ann"}'),
            records.RelayIn("3", 2**32 + 5, (b"\x02{}", b"\xff not even utf-8")),
            records.RelayOut("1", 2**32 + 5, b"\x00\x00\x00\x03\x81{}", "close"),
            records.RelayClosed("3", 2**32 + 5),
        ):
            with self.subTest(note=note):
                self.assertEqual(records.read_note(json.loads(codec.dumps(note.to_json()))), note)
        self.assertIsNone(records.read_note({"kind": "frobnicate"}), "a newer node's: ignored")

    def test_a_session_record_round_trips_and_an_old_one_has_no_admin_rights(self) -> None:
        record = records.SessionRecord("3", 2**32 + 1, "Ann", 2, True, True, ("t1", "t2"))
        self.assertEqual(records.SessionRecord.from_json(json.loads(json.dumps(record.to_json()))), record)
        older = {k: v for k, v in record.to_json().items() if k != "admin"}
        self.assertFalse(records.SessionRecord.from_json(older).admin)
