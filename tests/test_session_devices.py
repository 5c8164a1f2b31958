"""A session's devices (core/connection.py ``Devices``): a mapping in the
order devices came, held without a dict while there is one."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from chatproto.core.connection import Devices


class Device:
    """A stand-in connection: devices are told apart by identity."""


class DevicesTests(SynchronousTestCase):
    def test_one_then_more_then_one_again(self):
        devices = Devices()
        a, b, c = Device(), Device(), Device()
        self.assertEqual((len(devices), list(devices), devices == {}), (0, [], True))
        devices[a] = "ta"
        self.assertEqual((dict(devices), devices._many), ({a: "ta"}, None))
        devices[a] = "ta2"
        devices[b] = "tb"
        devices[c] = "tc"
        self.assertEqual(list(devices.items()), [(a, "ta2"), (b, "tb"), (c, "tc")])
        self.assertIs(next(reversed(devices)), c)
        del devices[a]
        self.assertEqual(devices.pop(c), "tc")
        self.assertEqual((dict(devices), devices._many), ({b: "tb"}, None), "back in its slots")
        self.assertIs(next(reversed(devices)), b)
        self.assertIsNone(devices.get(a))
        self.assertRaises(KeyError, devices.__delitem__, a)
        self.assertEqual({**devices}, {b: "tb"})
        del devices[b]
        self.assertEqual((len(devices), bool(devices), list(reversed(devices))), (0, False, []))
        self.assertRaises(KeyError, devices.__getitem__, b)
