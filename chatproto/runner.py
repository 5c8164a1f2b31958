"""``chat-server``: ``twist chat`` under its own name (foreground, logs to stdout).

chat-server --listen tcp:7777 --config /etc/chat.toml
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from twisted.application.twist._twist import Twist

    Twist.main(["chat-server", "chat", *(sys.argv[1:] if argv is None else argv)])
