"""A session's devices, rooms and read markers (core/smallmap.py): a
mapping in the order its keys came, held without a dict while it has one
entry."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from chatproto.core.connection import Session
from chatproto.core.smallmap import _MANY, SmallMap


def in_slots(mapping: SmallMap) -> bool:
    """Whether its one entry is held in its slots (no dict)."""
    return mapping._key is not _MANY


class Device:
    """A stand-in connection: devices are told apart by identity."""


class SmallMapTests(SynchronousTestCase):
    def test_one_then_more_then_one_again(self):
        devices: SmallMap[Device, str] = SmallMap()
        a, b, c = Device(), Device(), Device()
        self.assertEqual((len(devices), list(devices), devices == {}), (0, [], True))
        devices[a] = "ta"
        self.assertEqual((dict(devices), in_slots(devices)), ({a: "ta"}, True))
        devices[a] = "ta2"
        devices[b] = "tb"
        devices[c] = "tc"
        self.assertEqual(list(devices.items()), [(a, "ta2"), (b, "tb"), (c, "tc")])
        self.assertIs(next(reversed(devices)), c)
        del devices[a]
        self.assertEqual(devices.pop(c), "tc")
        self.assertEqual((dict(devices), in_slots(devices)), ({b: "tb"}, True), "back in its slots")
        self.assertIs(next(reversed(devices)), b)
        self.assertIsNone(devices.get(a))
        self.assertRaises(KeyError, devices.__delitem__, a)
        self.assertEqual({**devices}, {b: "tb"})
        del devices[b]
        self.assertEqual((len(devices), bool(devices), list(reversed(devices))), (0, False, []))
        self.assertRaises(KeyError, devices.__getitem__, b)

    def test_keys_compare_by_equality(self):
        """Room keys are strings made anew for each request: an equal key
        finds the entry, as in a dict."""
        marks: SmallMap[str, int] = SmallMap()
        key = "".join(["lob", "by"])
        self.assertEqual(marks.setdefault(key, 5), 5)
        self.assertEqual(marks.setdefault("lobby", 9), 5, "an equal key is the same entry")
        self.assertEqual(
            ("lobby" in marks, "hall" in marks, marks.get("lobby"), marks.get("hall", 0)), (True, False, 5, 0)
        )
        marks["lobby"] = 7
        self.assertEqual((dict(marks), in_slots(marks)), ({"lobby": 7}, True))
        marks["hall"] = 1
        self.assertEqual((marks.get("hall"), "hall" in marks, len(marks)), (1, True, 2))
        self.assertEqual(marks.pop("lobby", None), 7)
        self.assertIsNone(marks.pop("lobby", None))
        self.assertEqual((dict(marks), in_slots(marks)), ({"hall": 1}, True))
        self.assertEqual(marks, {"hall": 1})
        marks.clear()
        self.assertEqual((len(marks), marks.get("hall")), (0, None))

    def test_none_is_a_key_like_any_other(self):
        """Emptiness is marked by an object of its own, not by None."""
        mapping: SmallMap[str | None, int] = SmallMap()
        self.assertNotIn(None, mapping)
        mapping[None] = 1
        self.assertEqual((mapping[None], len(mapping), list(mapping)), (1, 1, [None]))

    def test_a_session_starts_with_empty_small_maps(self):
        session = Session(1, "ann", "ann", None, 0.0)
        for mapping in (session.rooms, session.devices, session.marks):
            self.assertIsInstance(mapping, SmallMap)
            self.assertEqual(len(mapping), 0)
        self.assertIsNot(session.rooms, Session(2, "bo", "bo", None, 0.0).rooms, "one each")
