"""Run Twisted inside Qt's event loop: asyncioreactor on a qasync loop.

Call :func:`install` once, after creating the QApplication and before
anything imports ``twisted.internet.reactor``; every other module of the
client imports the reactor inside functions, never at module load.
"""

from __future__ import annotations

import asyncio
import sys

from PyQt6.QtWidgets import QApplication


def install(app: QApplication):
    """Install the reactor on a qasync loop driving ``app``; returns the reactor."""
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor

        if type(reactor).__name__ != "AsyncioSelectorReactor":
            raise RuntimeError(
                f"{type(reactor).__name__} was installed before the Qt reactor: "
                "something imported twisted.internet.reactor too early"
            )
        return reactor
    import qasync
    from twisted.internet import asyncioreactor

    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    from twisted.internet import reactor

    return reactor
