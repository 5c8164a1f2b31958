"""One JSON object per log line, for Loki, ELK and the like.

    twistd -n --logger chatproto.logs.json_observer chat ...
    python -m twisted --log-format=json chat ...      (Twisted's own JSON events)

Each line holds ``time`` (ISO 8601, UTC), ``level``, ``namespace`` and
``text`` (the event formatted as the text log shows it), and ``error`` with
the traceback when the event carries a failure. The server never logs
message text, in any format.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import TextIO

from twisted.logger import ILogObserver, formatEvent
from zope.interface import provider


def json_observer(out: TextIO | None = None) -> ILogObserver:
    """A log observer writing a JSON line per event to ``out`` (stdout)."""
    stream = out if out is not None else sys.stdout

    @provider(ILogObserver)
    def observe(event: dict) -> None:
        level = event.get("log_level")
        record = {
            "time": datetime.fromtimestamp(event.get("log_time", 0), timezone.utc).isoformat(),
            "level": level.name if level is not None else "info",
            "namespace": event.get("log_namespace", ""),
            "text": formatEvent(event),
        }
        failure = event.get("log_failure")
        if failure is not None:
            record["error"] = failure.getTraceback()
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        stream.flush()

    return observe
