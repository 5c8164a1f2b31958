"""The client's safety net: a bug must never take the window down.

PyQt6 aborts the process on an exception raised in a slot, unless
``sys.excepthook`` has been replaced; a Deferred's unhandled failure is only
logged. :class:`ErrorReporter` catches both: each is written to the log with
its traceback, counted (the end-to-end tests fail on any), and announced
through ``problem`` so the window can say something went wrong and go on.
"""

from __future__ import annotations

import sys
import traceback
from typing import TextIO

from PyQt6.QtCore import QObject, pyqtSignal
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    globalLogPublisher,
    textFileLogObserver,
)


class ErrorReporter(QObject):
    """Counts and reports unexpected exceptions; ``problem`` carries a one-line summary."""

    problem = pyqtSignal(str)

    def __init__(self, stream: TextIO | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.stream = stream if stream is not None else sys.stderr
        self.count = 0
        self.summaries: list[str] = []
        self._previous_hook = None

    def install(self) -> None:
        """Catch exceptions in slots and failures logged by Twisted, and send
        the client's own warnings and errors to ``stream``."""
        self._previous_hook, sys.excepthook = sys.excepthook, self.excepthook
        globalLogPublisher.addObserver(self._observe)
        predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
        observer = FilteringLogObserver(textFileLogObserver(self.stream), [predicate])
        globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    def uninstall(self) -> None:
        if self._previous_hook is not None:
            sys.excepthook, self._previous_hook = self._previous_hook, None
        globalLogPublisher.removeObserver(self._observe)

    def excepthook(self, kind, value, tb) -> None:
        details = "".join(traceback.format_exception(kind, value, tb))
        self.report(f"{kind.__name__}: {value}", details)

    def report(self, summary: str, details: str) -> None:
        """One unexpected error: logged in full, counted, announced in a line."""
        self.count += 1
        self.summaries.append(summary)
        try:
            self.stream.write(f"chat-client: unexpected error (the window stays open):\n{details}\n")
            self.stream.flush()
        except (OSError, ValueError):  # no terminal left to write to: still counted
            pass
        self.problem.emit(summary)

    def _observe(self, event: dict) -> None:
        failure = event.get("log_failure")
        level = event.get("log_level")
        if failure is None or level is None or level < LogLevel.error:
            return
        summary = f"{failure.type.__name__}: {failure.getErrorMessage()}"
        # The text observer installed above writes the traceback itself.
        self.count += 1
        self.summaries.append(summary)
        self.problem.emit(summary)
