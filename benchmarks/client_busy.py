"""A busy room for the desktop client: is the window still responsive?

    python -m benchmarks.client_busy [--rate 2000] [--seconds 5] [--runs 3]

A chat server runs on core 0; the window (offscreen) and a paced load
generator share core 1. While ``--rate`` messages a second arrive, a 10 ms
QTimer in the window's thread records how late it fires: that lateness is
what a user feels as a sluggish window. The same window is measured with
batched model updates (the client's default, one insert per 50 ms) and with
one insert per message (the baseline), in one run; medians of ``--runs``.
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
    from twisted.internet import defer, threads

    from qtclient.views.connect_dialog import Target
    from qtclient.views.main_window import MainWindow

    results: dict[str, list[dict]] = {"batched": [], "per message": []}

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
            settings = QSettings(
                os.path.join(ROOT, "benchmarks", ".bench-client.ini"), QSettings.Format.IniFormat
            )
            window = MainWindow(reactor, settings, batch_ms=batch_ms)
            window.resize(900, 600)
            window.show()
            welcomed = defer.Deferred()
            window.session.welcomed.connect(lambda w: welcomed.called or welcomed.callback(w))
            window.connect_to(Target("127.0.0.1", port, "watcher"))
            yield welcomed
            received = []
            window.session.messageReceived.connect(lambda m: received.append(time.perf_counter()))
            lateness: list[float] = []
            last = [time.perf_counter()]

            def tick():
                now = time.perf_counter()
                lateness.append((now - last[0]) * 1000 - 10)
                last[0] = now

            timer = QTimer()
            timer.setInterval(10)
            timer.timeout.connect(tick)
            timer.start()
            started = time.perf_counter()
            yield threads.deferToThread(load, port)
            elapsed = time.perf_counter() - started
            timer.stop()
            yield window.session.disconnect()
            window.close()
            lateness.sort()
            results[mode].append(
                {
                    "messages_per_s": len(received) / elapsed,
                    "rows": window.transcript.rowCount(),
                    "lag_p50_ms": lateness[len(lateness) // 2],
                    "lag_p99_ms": lateness[int(len(lateness) * 0.99)],
                    "lag_max_ms": lateness[-1],
                }
            )
            print(f"  {mode:<12} {results[mode][-1]}", flush=True)

    @defer.inlineCallbacks
    def run_all():
        try:
            for _ in range(args.runs):
                yield measure("batched", 50)
                yield measure("per message", 0)
        finally:
            reactor.stop()

    reactor.callWhenRunning(run_all)
    reactor.run()
    ini = os.path.join(ROOT, "benchmarks", ".bench-client.ini")
    if os.path.exists(ini):
        os.remove(ini)
    print(f"\n{args.rate} incoming messages/s for {args.seconds:.0f} s, medians of {args.runs} runs")
    print(f"{'':<14}{'received/s':>12}{'UI lag p50':>12}{'p99':>10}{'max':>10}  (ms late for a 10 ms timer)")
    med = {}
    for mode, runs in results.items():
        med[mode] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        m = med[mode]
        print(
            f"{mode:<14}{m['messages_per_s']:>12,.0f}{m['lag_p50_ms']:>12.1f}{m['lag_p99_ms']:>10.1f}"
            f"{m['lag_max_ms']:>10.1f}"
        )
    ratio = med["per message"]["lag_p99_ms"] / max(med["batched"]["lag_p99_ms"], 0.1)
    print(f"p99 UI lag, per-message ÷ batched: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
