"""A busy room for the desktop client: is the window still responsive?

    python -m benchmarks.client_busy [--rate 2000] [--seconds 5] [--runs 3]
        [--peers 10000] [--presence-rate 1000] [--part messages|peers|all]

Messages: a chat server runs on core 0; the window (offscreen) and a paced
load generator share core 1. While ``--rate`` messages a second arrive, a
10 ms QTimer in the window's thread records how late it fires: that
lateness is what a user feels as a sluggish window. The same window is
measured with batched model updates (the client's default, one insert per
50 ms) and with one insert per message (the baseline).

Members: the window applies a ROOM listing ``--peers`` members (timed until
it has painted), then takes ``--presence-rate`` JOINED and LEFT a second
in a room of 2,000 while the same 10 ms timer measures the lag. The current
member tree is measured against a linear one (benchmarks/baselines/
linear_peers.py: a scan per member, the whole tree expanded on every
JOINED). Everything runs in one process, in one run; medians of ``--runs``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers", type=int, default=10000)
    parser.add_argument("--presence-rate", type=int, default=1000)
    parser.add_argument("--part", choices=["messages", "peers", "all"], default="all")
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    from PyQt6.QtCore import QSettings, QTimer
    from PyQt6.QtWidgets import QApplication

    from benchmarks.run import pinned, server

    app = QApplication(sys.argv[:1])
    from qtclient import qtreactor

    reactor = qtreactor.install(app)
    from twisted.internet import defer, task, threads

    from benchmarks.baselines.linear_peers import BaselineWindow
    from chatproto import codec
    from qtclient.views.connect_dialog import Target
    from qtclient.views.main_window import MainWindow

    results: dict[str, list[dict]] = {"batched": [], "per message": []}
    peer_results: dict[str, list[dict]] = {"client": [], "baseline": []}
    ini = os.path.join(ROOT, "benchmarks", ".bench-client.ini")

    class LagProbe:
        """A 10 ms timer in the UI thread; how late each tick fires, in ms."""

        def __init__(self) -> None:
            self.lateness: list[float] = []
            self._last = time.perf_counter()
            self._timer = QTimer()
            self._timer.setInterval(10)
            self._timer.timeout.connect(self._tick)
            self._timer.start()

        def _tick(self) -> None:
            now = time.perf_counter()
            self.lateness.append((now - self._last) * 1000 - 10)
            self._last = now

        def stop(self) -> dict:
            self._timer.stop()
            late = sorted(self.lateness)
            return {
                "lag_p50_ms": late[len(late) // 2],
                "lag_p99_ms": late[int(len(late) * 0.99)],
                "lag_max_ms": late[-1],
            }

    def room(count: int, first: int = 1) -> codec.RoomState:
        peers = [codec.Peer(i, f"peer{i}") for i in range(first, first + count)]
        return codec.RoomState("general", "", peers, [])

    @defer.inlineCallbacks
    def measure_peers(mode: str, window_class):
        settings = QSettings(ini, QSettings.Format.IniFormat)
        window = window_class(reactor, settings)
        window.resize(900, 600)
        window.show()
        app.processEvents()
        started = time.perf_counter()
        window.session.roomJoined.emit(room(args.peers), False)
        app.processEvents()  # until the tree has painted
        welcome_ms = (time.perf_counter() - started) * 1000
        assert window.peers.room_item("general").rowCount() == args.peers
        window.session.roomJoined.emit(room(2000), False)
        app.processEvents()
        present = list(range(1, 2001))
        next_id = [2001]
        sent = [0]
        probe = LagProbe()
        began = time.perf_counter()

        def drive() -> None:  # JOINED and LEFT in turn, at --presence-rate a second
            due = int((time.perf_counter() - began) * args.presence_rate)
            while sent[0] < due:
                if sent[0] % 2 == 0:
                    window.session.peerJoined.emit(codec.Joined(next_id[0], f"peer{next_id[0]}", "general"))
                    present.append(next_id[0])
                    next_id[0] += 1
                else:
                    gone = present.pop(0)
                    window.session.peerLeft.emit(codec.Left(gone, f"peer{gone}", "quit", None, "general"))
                sent[0] += 1

        driver = QTimer()
        driver.setInterval(5)
        driver.timeout.connect(drive)
        driver.start()
        yield task.deferLater(reactor, args.seconds, lambda: None)
        driver.stop()
        elapsed = time.perf_counter() - began
        lag = probe.stop()
        assert window.peers.room_item("general").rowCount() == len(present)
        window.close()
        result = {"welcome_ms": welcome_ms, "events_per_s": sent[0] / elapsed, **lag}
        peer_results[mode].append(result)
        print(f"  {mode:<12} {result}", flush=True)

    def load(port: int) -> None:
        argv = [
            *pinned(1),
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            "paced",
            "--port",
            str(port),
            "--senders",
            "4",
            "--rate",
            str(args.rate),
            "--duration",
            str(args.seconds),
        ]
        subprocess.run(
            argv, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), check=True, stdout=subprocess.DEVNULL
        )

    @defer.inlineCallbacks
    def measure(mode: str, batch_ms: int):
        with server("ours") as (_pid, port):
            settings = QSettings(ini, QSettings.Format.IniFormat)
            window = MainWindow(reactor, settings, batch_ms=batch_ms)
            window.resize(900, 600)
            window.show()
            welcomed = defer.Deferred()
            window.session.roomJoined.connect(lambda s, r: welcomed.called or welcomed.callback(s))
            window.connect_to(Target("127.0.0.1", port, "watcher"))
            yield welcomed
            received = []
            window.session.messageReceived.connect(lambda m: received.append(time.perf_counter()))
            probe = LagProbe()
            started = time.perf_counter()
            yield threads.deferToThread(load, port)
            elapsed = time.perf_counter() - started
            lag = probe.stop()
            yield window.session.disconnect()
            window.close()
            results[mode].append(
                {"messages_per_s": len(received) / elapsed, "rows": window.transcript.rowCount(), **lag}
            )
            print(f"  {mode:<12} {results[mode][-1]}", flush=True)

    @defer.inlineCallbacks
    def run_all():
        try:
            for _ in range(args.runs):
                if args.part in ("messages", "all"):
                    yield measure("batched", 50)
                    yield measure("per message", 0)
                if args.part in ("peers", "all"):
                    yield measure_peers("client", MainWindow)
                    yield measure_peers("baseline", BaselineWindow)
        finally:
            reactor.stop()

    reactor.callWhenRunning(run_all)
    reactor.run()
    if os.path.exists(ini):
        os.remove(ini)
    if args.part in ("messages", "all"):
        report_messages(args, results)
    if args.part in ("peers", "all"):
        report_peers(args, peer_results)
    return 0


def _medians(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def report_peers(args, results: dict[str, list[dict]]) -> None:
    print(f"\nMember tree: ROOM of {args.peers:,} members, then {args.presence_rate:,} JOINED/LEFT a second")
    print(f"for {args.seconds:.0f} s in a room of 2,000; medians of {args.runs} runs")
    print(f"{'':<12}{'ROOM ms':>12}{'events/s':>10}{'UI lag p50':>12}{'p99':>10}{'max':>10}")
    med = {mode: _medians(runs) for mode, runs in results.items()}
    for mode, m in med.items():
        print(
            f"{mode:<12}{m['welcome_ms']:>12.1f}{m['events_per_s']:>10,.0f}{m['lag_p50_ms']:>12.1f}"
            f"{m['lag_p99_ms']:>10.1f}{m['lag_max_ms']:>10.1f}"
        )
    print(
        f"baseline ÷ client: ROOM {med['baseline']['welcome_ms'] / med['client']['welcome_ms']:.1f}x, "
        f"p99 lag {med['baseline']['lag_p99_ms'] / max(med['client']['lag_p99_ms'], 0.1):.1f}x"
    )


def report_messages(args, results: dict[str, list[dict]]) -> None:
    print(f"\n{args.rate} incoming messages/s for {args.seconds:.0f} s, medians of {args.runs} runs")
    print(f"{'':<14}{'received/s':>12}{'UI lag p50':>12}{'p99':>10}{'max':>10}  (ms late for a 10 ms timer)")
    med = {mode: _medians(runs) for mode, runs in results.items()}
    for mode, m in med.items():
        print(
            f"{mode:<14}{m['messages_per_s']:>12,.0f}{m['lag_p50_ms']:>12.1f}{m['lag_p99_ms']:>10.1f}"
            f"{m['lag_max_ms']:>10.1f}"
        )
    ratio = med["per message"]["lag_p99_ms"] / max(med["batched"]["lag_p99_ms"], 0.1)
    print(f"p99 UI lag, per-message ÷ batched: {ratio:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
