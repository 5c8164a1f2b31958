"""One reactor timer for many deadlines."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chatproto.core.timers import Timers


class TimersTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.timers = Timers(self.clock)
        self.fired = []

    def later(self, delay, name):
        return self.timers.call_later(delay, lambda: self.fired.append((self.clock.seconds(), name)))

    def test_fire_in_order_at_their_exact_times_with_one_reactor_timer(self):
        self.later(5, "b")
        self.later(1.5, "a")
        self.later(5, "c")  # same time: in the order they were asked for
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1.49)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.01)
        self.clock.advance(3.5)
        self.assertEqual(self.fired, [(1.5, "a"), (5, "b"), (5, "c")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelled_deadlines_do_not_fire(self):
        first = self.later(1, "x")
        self.later(2, "y")
        self.assertTrue(first.active())
        first.cancel()
        self.assertFalse(first.active())
        self.assertEqual(len(self.timers), 1)
        self.clock.advance(1)
        self.assertEqual(self.fired, [])
        self.clock.advance(1)
        self.assertEqual(self.fired, [(2, "y")])

    def test_no_reactor_timer_is_left_for_cancelled_deadlines(self):
        deadlines = [self.later(d, "x") for d in (1, 2, 3)]
        for deadline in deadlines:
            deadline.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_deadline_set_while_firing(self):
        def chain():
            self.fired.append("first")
            self.timers.call_later(0, lambda: self.fired.append("same turn"))
            self.timers.call_later(1, lambda: self.fired.append("next"))

        self.timers.call_later(1, chain)
        self.clock.advance(1)
        self.assertEqual(self.fired, ["first", "same turn"])
        self.clock.advance(1)
        self.assertEqual(self.fired, ["first", "same turn", "next"])

    def test_an_earlier_deadline_rearms_the_timer(self):
        self.later(10, "late")
        self.later(1, "early")
        (call,) = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 1)

    def test_cancelling_the_earliest_leaves_the_reactor_timer_until_it_wakes(self):
        first = self.later(1, "x")
        self.later(3, "y")
        (call,) = self.clock.getDelayedCalls()
        first.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [call])  # not re-armed at every login
        self.clock.advance(1)
        self.assertEqual(self.fired, [])
        (call,) = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 3)
        self.clock.advance(2)
        self.assertEqual(self.fired, [(3, "y")])

    def test_a_deadline_cancelled_twice_or_after_firing_counts_once(self):
        fired = self.later(1, "x")
        kept = self.later(5, "y")
        self.clock.advance(1)
        fired.cancel()
        kept.cancel()
        kept.cancel()
        self.assertEqual(len(self.timers), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.later(2, "z")
        self.assertEqual(len(self.timers), 1)
        self.clock.advance(2)
        self.assertEqual(self.fired, [(1, "x"), (3, "z")])

    def test_a_deadline_that_raises_leaves_the_others_armed(self):
        def fails():
            raise ZeroDivisionError()

        self.timers.call_later(1, fails)
        self.later(1, "same time")
        self.later(5, "later")
        self.assertRaises(ZeroDivisionError, self.clock.advance, 1)
        self.clock.advance(0)
        self.assertEqual(self.fired, [(1, "same time")])
        self.clock.advance(4)
        self.assertEqual(self.fired, [(1, "same time"), (5, "later")])
