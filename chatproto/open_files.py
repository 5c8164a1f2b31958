"""The process's open-file limit, raised to what ``--max-clients`` needs.

Every connection is a file. A shell's default soft limit (often 1,024) is
far below ``--max-clients``; the hard limit usually is not, and an
unprivileged process may raise its soft limit up to it, as servers
commonly do at start. What the hard limit still leaves short is said in
the log, once, with the number of connections it allows.
"""

from __future__ import annotations

import resource

from twisted.application.service import Service
from twisted.logger import Logger

log = Logger()

#: Files the server keeps open besides its connections: listeners, the
#: history and search databases and their journals, the log, a thread pool's
#: pipes, uploads in progress.
OWN_FILES = 100


def raise_soft_limit(wanted: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never lower it, never
    past the hard limit); the (soft, hard) limits then."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log.warn("could not raise the open-file limit to {target}: {error}", target=target, error=e)
        else:
            soft = target
    return soft, hard


class OpenFiles(Service):
    """At start: room for ``max_clients`` connections and the server's own files."""

    def __init__(self, max_clients: int) -> None:
        self.max_clients = max_clients

    def startService(self) -> None:
        super().startService()
        soft, hard = raise_soft_limit(self.max_clients + OWN_FILES)
        room = soft - OWN_FILES
        if room < self.max_clients:
            log.warn(
                "--max-clients is {max_clients} but this process may open only {soft} files "
                "(hard limit {hard}): about {room} connections fit; raise the hard limit "
                "(LimitNOFILE= under systemd, ulimit -Hn as root) or lower --max-clients",
                max_clients=self.max_clients,
                soft=soft,
                hard="unlimited" if hard == resource.RLIM_INFINITY else hard,
                room=max(room, 0),
            )
