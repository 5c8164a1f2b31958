"""The safety net: a bug in a slot or a Deferred is logged, counted and
shown, and the window goes on (tests/e2e runs it in the real app)."""

from __future__ import annotations

import io

from twisted.logger import Logger, globalLogPublisher

from qtclient.errors import ErrorReporter


def test_an_exception_in_a_slot_is_logged_counted_and_shown(window, qtbot):
    stream = io.StringIO()
    reporter = ErrorReporter(stream)
    reporter.problem.connect(window.show_internal_error)
    try:
        {}["missing"]
    except KeyError as e:
        reporter.excepthook(type(e), e, e.__traceback__)
    assert reporter.count == 1 and reporter.summaries == ["KeyError: 'missing'"]
    assert "Traceback" in stream.getvalue() and "the window stays open" in stream.getvalue()
    assert window.banner.isVisible() and "KeyError" in window.banner.text()
    window.submit("/topic")  # the window still works
    assert window.isVisible()


def test_a_failure_logged_by_twisted_is_counted():
    reporter = ErrorReporter(io.StringIO())
    globalLogPublisher.addObserver(reporter._observe)
    try:
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            Logger().failure("Unhandled error in Deferred:")
        Logger().warn("a warning is not a bug")
    finally:
        globalLogPublisher.removeObserver(reporter._observe)
    assert reporter.count == 1 and reporter.summaries[0].startswith("ZeroDivisionError")
