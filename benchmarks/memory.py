"""Where an idle connection's bytes go: ``python -m benchmarks.memory [N]``.

Runs the server in this process with tracemalloc on, connects N idle
logged-in clients from a load generator process, and prints the Python
memory they added per connection, grouped by the module that allocated it
(the transport, the protocol, the session, the outbox, the timers, the
indexes); ``GROUP=lineno`` groups by line. Python's allocations only: RSS
adds the allocator's slack. Loopback only; the generator exits when told.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc

from scripts.spawn import ROOT


def main(count: int) -> None:
    tracemalloc.start(1)
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    # Logging begun (as twistd does), so no event is held for later.
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)

    from chatproto.limits import Limits
    from chatproto.server import build_server

    server = build_server(
        reactor, ["tcp:0:interface=127.0.0.1:backlog=4096"], ":memory:", Limits(max_clients=20000)
    )
    server.start()
    before = tracemalloc.take_snapshot()
    argv = [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        "idle",
        "--port",
        str(server.port),
        "--connections",
        str(count),
    ]
    gen = subprocess.Popen(
        argv, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    reader = reactor.callInThread  # the generator's "ready" line is read off the reactor thread

    def wait_ready() -> None:
        for line in gen.stdout:
            if json.loads(line).get("ready"):
                reactor.callFromThread(report)
                return

    def report() -> None:
        try:
            print_report(tracemalloc.take_snapshot())
        finally:  # the generator and the server end even if the report could not be printed (a closed pipe)
            gen.stdin.write(b"done\n")
            gen.stdin.flush()
            reactor.callLater(1, reactor.stop)

    def print_report(after: tracemalloc.Snapshot) -> None:
        stats = after.compare_to(before, os.environ.get("GROUP", "filename"))
        total = sum(s.size_diff for s in stats)
        print(f"{count} idle connections: {total / count:,.0f} B of Python memory each; by module:")
        for stat in sorted(stats, key=lambda s: -s.size_diff)[: int(os.environ.get("TOP", "15"))]:
            frame = stat.traceback[0]
            name = os.path.relpath(frame.filename, ROOT) + (f":{frame.lineno}" if frame.lineno else "")
            print(f"  {stat.size_diff / count:>8,.0f} B  {stat.count_diff / count:>6.1f} blocks  {name}")

    reader(wait_ready)
    reactor.run()
    gen.wait(60)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
