"""``make bench``: our server and two baselines, side by side, in one run.

    python -m benchmarks.run [--runs 3] [--quick] [--json PATH] [--chart PATH]

Each server runs in its own process pinned to core 0 and the load generator
to core 1 (when there are two cores and taskset exists). Every scenario runs
``--runs`` times per server; the table shows medians and our ratio to each
baseline. The server's CPU use is sampled during each measurement, so a run
where the generator, not the server, was saturated is flagged as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial

from chatproto import codec
from scripts.procstat import (
    ROOT,
    cpu_seconds,
    load_server_argv,
    pinned,
    rss_bytes,
    start_pinned,
    start_pinned_ports,
    stop_server,
)
from scripts.spawn import (
    ask_redis,
    free_port,
    sentinel_config,
    start_redis,
    start_redis_cluster,
    start_sentinel,
    start_server,
)

PY = sys.executable


#: For the throughput runs: a generator that falls behind reading some of
#: its 1000 sockets must not get them cut as slow consumers (the slow-reader
#: run keeps the default, 1 MiB).
DEEP_SENDQ = ("--sendq", str(64 * 1024 * 1024))


def server_argv(kind: str, history: str, extra: tuple[str, ...] = ()) -> list[str]:
    if kind == "ours":
        # Throughput, not fairness: the chat rate limit and the fair share
        # (budget and per-turn cap) lifted, as the baselines have neither.
        unlimited = [
            "--rate",
            "1e9",
            "--burst",
            "1000000000",
            "--packet-rate",
            "1e9",
            "--packet-burst",
            "1e9",
        ]
        return load_server_argv(history, *unlimited, "--packets-per-turn", "1000000000", *extra)
    if kind == "ngircd":
        return ngircd_argv(os.path.dirname(history))
    module = {
        "naive": "benchmarks.baselines.naive_server",
        "line": "benchmarks.baselines.line_server",
        "naive-ws": "benchmarks.baselines.naive_ws_server",
    }[kind]
    return [PY, "-m", module, "0"]


def mode_of(kind: str) -> str:
    return {"line": "lines", "naive-ws": "websocket", "ngircd": "irc"}.get(kind, "frames")


NGIRCD = shutil.which("ngircd") or "/usr/sbin/ngircd"


def ngircd_argv(folder: str) -> list[str]:
    """Debian's ngircd on a loopback port of its own, #general made, and its
    flood penalties off (MaxPenaltyTime = 0): like ours here, unthrottled."""
    path = os.path.join(folder, "ngircd.conf")
    with open(path, "w") as f:
        f.write(
            f"[Global]\nName = bench.local\nInfo = bench\nPorts = {free_port()}\nListen = 127.0.0.1\n"
            "[Limits]\nMaxConnections = 0\nMaxConnectionsIP = 0\nMaxJoins = 0\nMaxNickLength = 30\n"
            "PingTimeout = 600\nPongTimeout = 600\nMaxPenaltyTime = 0\n"
            "[Options]\nPAM = no\nDNS = no\nIdent = no\n[Channel]\nName = #general\nModes = n\n"
        )
    return [NGIRCD, "-n", "-f", path]


def rss_kib(pid: int) -> int:
    return rss_bytes(pid) // 1024


@contextmanager
def server(kind: str, extra: tuple[str, ...] = (), listeners: int = 1):
    """A fresh server process; yields (pid, port): the port of the last of
    its ``listeners`` (with ``--web``, the web port)."""
    folder = tempfile.mkdtemp(prefix="chatbench-")
    proc, port = start_pinned(server_argv(kind, f"{folder}/bench.sqlite3", extra), listeners=listeners)
    try:
        yield proc.pid, port
    finally:
        stop_server(proc, folder)


class GeneratorFailed(RuntimeError):
    """The load generator ended without a result (its traceback is on stderr)."""


def once_more(run: Callable[[], dict], kind: str, what: str) -> dict:
    """``run()`` (each call with a fresh server), and for a baseline once
    more if its generator failed: one that stalls once (ngircd, now and
    then, under a batch of registrations) must not end an hour's bench. The
    result says it was the second try. Ours is never tried again: its
    failure is what the bench is for."""
    try:
        return run()
    except GeneratorFailed as e:
        if kind == "ours":
            raise
        print(f"  {what}: {e}; once more, on a fresh server", flush=True)
        result = run()
        result["second_try"] = True
        return result


def generate(
    port: int,
    mode: str,
    scenario: str,
    *args: str,
    pid: int | None = None,
    on_ready=None,
    timeout: float = 900,
    module: str = "benchmarks.loadgen",
) -> dict:
    """Run the load generator (``module``: the files scenario has its own);
    sample the server while it runs."""
    argv = [*pinned(1), PY, "-m", module, scenario, "--port", str(port), "--mode", mode, *args]
    env = dict(os.environ, PYTHONPATH=ROOT)
    gen = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    peak = rss_kib(pid)
    result = None
    deadline = time.monotonic() + timeout
    for line in gen.stdout:
        data = json.loads(line)
        if data.get("ready") and on_ready is not None:
            on_ready(data)
            gen.stdin.write("done\n")
            gen.stdin.flush()
        else:
            result = data
        if time.monotonic() > deadline:
            gen.kill()
            raise RuntimeError(f"{scenario} took longer than {timeout} s")
    gen.wait()
    peak = max(peak, rss_kib(pid))
    if result is None:
        raise GeneratorFailed(f"generator failed in {scenario}")
    result["server_cpu_avg"] = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    result["server_rss_kib"] = peak
    return result


def repeated(
    kind: str, runs: int, scenario: str, *args: str, timeout: float = 900, server_args: tuple[str, ...] = ()
) -> list[dict]:
    """The scenario ``runs`` times, each against a fresh server (ours
    started with ``server_args``)."""

    def run() -> dict:
        with server(kind, server_args if kind == "ours" else ()) as (pid, port):
            return generate(port, mode_of(kind), scenario, *args, pid=pid, timeout=timeout)

    return [once_more(run, kind, f"{scenario} {kind}") for _ in range(runs)]


def measure_fanout_cpu(kind: str, receivers: int, extra: list[str], server_args=DEEP_SENDQ) -> dict:
    """Fan-out, with the server's CPU share sampled during its busiest second."""
    return measure_cpu(kind, "fanout", ["--receivers", str(receivers), *extra], server_args)


def measure_cpu(
    kind: str,
    scenario: str,
    args: list[str],
    server_args: tuple[str, ...] = DEEP_SENDQ,
    mode: str | None = None,
    listeners: int = 1,
) -> dict:
    """A scenario with the server's CPU share sampled during its busiest
    second (a baseline's tried once more if its generator failed)."""
    run = partial(sampled, kind, scenario, args, server_args, mode, listeners)
    return once_more(run, kind, f"{scenario} {kind}")


def sampled(
    kind: str, scenario: str, args: list[str], server_args: tuple[str, ...], mode: str | None, listeners: int
) -> dict:
    """One run of :func:`measure_cpu`."""
    with server(kind, server_args, listeners) as (pid, port):
        import threading

        samples = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append((time.monotonic(), cpu_seconds(pid), rss_kib(pid)))
                stop.wait(0.2)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        started = time.monotonic()
        try:
            result = generate(port, mode or mode_of(kind), scenario, *args, pid=pid)
        finally:
            stop.set()
            thread.join()
        best = 0.0
        for i in range(len(samples)):
            for j in range(i + 1, len(samples)):
                if samples[j][0] - samples[i][0] >= 1.0:
                    best = max(best, (samples[j][1] - samples[i][1]) / (samples[j][0] - samples[i][0]))
                    break
        result["server_cpu"] = best
        result["server_rss_kib"] = max(s[2] for s in samples) if samples else result["server_rss_kib"]
        result["wall"] = time.monotonic() - started
        return result


#: (label, rooms, receivers per room, senders in all): the issue's comparison
#: (the same 1000 receivers in one room, with fan-out's 4 senders, or in 100
#: rooms with a sender each), and those rooms against one room of their shape.
ROOM_SHAPES = [
    ("1 room x 1000", 1, 1000, 4),
    ("100 rooms x 10", 100, 10, 100),
    ("1 room x 10", 1, 10, 1),
]


def rooms_bench(runs: int, duration: list[str]) -> dict:
    """Server CPU per delivery, the server saturated, for each shape;
    interleaved, so that the machine's drift hits every shape alike."""
    measured: dict[str, list[dict]] = {label: [] for label, *_ in ROOM_SHAPES}
    for _ in range(runs):
        for label, count, receivers, senders in ROOM_SHAPES:
            args = [
                "--rooms",
                str(count),
                "--receivers",
                str(receivers),
                "--senders",
                str(senders),
                *duration,
            ]
            result = measure_cpu("ours", "rooms", args)
            result["us_per_delivery"] = result["server_cpu"] / result["steady_deliveries_per_s"] * 1e6
            measured[label].append(result)
    row = {}
    for label, *_ in ROOM_SHAPES:
        runs_of = measured[label]
        row[label] = summarize(runs_of, "us_per_delivery")
        r = row[label]
        print(
            f"  rooms {label:<15} {r['deliveries_per_s']:>12,.0f} deliveries/s  "
            f"{r['us_per_delivery']:.3f} us server CPU each  server cpu {r['server_cpu']:.0%}  "
            f"generator cpu {r['generator_cpu']:.0%}  lost {r['lost']}  order errors {r['order_errors']}",
            flush=True,
        )
    return row


def print_rooms(row: dict) -> None:
    single, many, small = (row[label]["us_per_delivery"] for label, *_ in ROOM_SHAPES)
    print(f"\n{'rooms (ours; server CPU per delivery)':<40} {'us':>8} {'deliveries/s':>14}")
    for label, r in row.items():
        print(f"{label:<40} {r['us_per_delivery']:>8.3f} {r['deliveries_per_s']:>14,.0f}")
    print(f"{'100 rooms x 10 ÷ 1 room x 1000':<40} {many / single:>8.2f}")
    print(f"{'100 rooms x 10 ÷ 1 room x 10':<40} {many / small:>8.2f}")


def metrics_bench(runs: int, duration: list[str]) -> dict:
    """Fan-out (10 receivers: the server is the bottleneck) with --metrics
    off and on, interleaved; scraped every second while on, as a busy
    Prometheus would."""
    import threading
    import urllib.request

    measured: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(runs):
        for mode in ("off", "on"):
            extra = DEEP_SENDQ
            scrapes = []
            stop = threading.Event()
            if mode == "on":
                port = free_port()
                extra = (*DEEP_SENDQ, "--metrics", f"tcp:{port}:interface=127.0.0.1")

                def scrape(port=port, stop=stop, scrapes=scrapes):
                    while not stop.wait(1.0):
                        try:
                            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                                scrapes.append(len(r.read()))
                        except OSError:
                            pass

                thread = threading.Thread(target=scrape, daemon=True)
                thread.start()
            result = measure_fanout_cpu("ours", 10, duration, server_args=extra)
            stop.set()
            result["scrapes"] = len(scrapes)
            measured[mode].append(result)
    row = {
        mode: {"deliveries_per_s": median_of(runs_of, "deliveries_per_s"), "runs": runs_of}
        for mode, runs_of in measured.items()
    }
    row["ratio"] = row["on"]["deliveries_per_s"] / row["off"]["deliveries_per_s"]
    print(
        f"  metrics off {row['off']['deliveries_per_s']:,.0f}  on {row['on']['deliveries_per_s']:,.0f} "
        f"deliveries/s (10 receivers; scraped every second): on ÷ off {row['ratio']:.3f}",
        flush=True,
    )
    return row


#: (label, kind, load generator mode, server listeners): TCP and WebSocket
#: on the same server (started with --web, so both listen), and a naive relay.
SOCKETS = [
    ("ours, TCP", "ours", "frames", 1),
    ("ours, WebSocket", "ours", "websocket", 2),
    ("naive WebSocket relay", "naive-ws", "websocket", 1),
]


def side_by_side(
    name: str, servers: list, ours: tuple, runs: int, receivers: int, duration: list[str], latency: str = ""
) -> dict:
    """Fan-out to ``receivers`` (and, given ``latency`` seconds, latency at
    200 msg/s to 100) on each of ``servers`` (label, kind, generator mode,
    listeners), ours started with ``ours``; interleaved, a fresh server each."""
    fanout: dict[str, list[dict]] = {label: [] for label, *_ in servers}
    paced: dict[str, list[dict]] = {label: [] for label, *_ in servers}
    for _ in range(runs):
        for label, kind, mode, listeners in servers:
            server_args = ours if kind == "ours" else DEEP_SENDQ
            args = ["--receivers", str(receivers), *duration]
            fanout[label].append(measure_cpu(kind, "fanout", args, server_args, mode, listeners))
            if latency:
                rate = ["--receivers", "100", "--rate", "200", "--duration", latency]
                with server(kind, server_args, listeners) as (pid, port):
                    paced[label].append(generate(port, mode, "latency", *rate, pid=pid))
    row = {}
    for label, *_ in servers:
        r = row[label] = summarize(fanout[label])
        said = f"  {name} {label:<22} {r['deliveries_per_s']:>12,.0f} deliveries/s  lost {r['lost']}  "
        said += f"server cpu {r['server_cpu']:.0%}  generator cpu {r['generator_cpu']:.0%}"
        if latency:
            r.update(p50_ms=median_of(paced[label], "p50_ms"), p99_ms=median_of(paced[label], "p99_ms"))
            r["latency_runs"] = paced[label]
            said += f"  latency p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms"
        print(said, flush=True)
    return row


def websocket_bench(runs: int, receivers: int, duration: list[str]) -> dict:
    """Fan-out over TCP and over WebSocket on the same server, and over a
    naive WebSocket relay."""
    web = (*DEEP_SENDQ, "--web", "tcp:0:interface=127.0.0.1")
    return side_by_side("websocket", SOCKETS, web, runs, receivers, duration)


def print_websocket(row: dict, receivers: int) -> None:
    tcp, ws, naive = (row[label]["deliveries_per_s"] for label, *_ in SOCKETS)
    print(f"\n{f'fan-out to {receivers} receivers + 4 senders':<40} {'deliveries/s':>14} {'bound by':>10}")
    for label, r in row.items():
        print(f"{label:<40} {r['deliveries_per_s']:>14,.0f} {r['bottleneck']:>10}")
    print(f"{'ours: WebSocket ÷ TCP':<40} {ws / tcp:>14.2f}")
    print(f"{'WebSocket: ours ÷ naive relay':<40} {ws / naive:>14.2f}")


#: (label, kind, load generator mode, server listeners): our TCP protocol,
#: our IRC gateway on the same kind of server, and ngircd.
IRC_SERVERS = [
    ("ours, TCP", "ours", "frames", 1),
    ("ours, IRC gateway", "ours", "irc", 2),
    ("ngircd (C)", "ngircd", "irc", 1),
]


def irc_bench(runs: int, receivers: int, duration: list[str], seconds: str) -> dict:
    """Fan-out and latency through our TCP protocol, our IRC gateway and ngircd."""
    if not os.path.exists(NGIRCD):
        print("  irc: ngircd is missing (make bench installs it): skipped", flush=True)
        return {}
    irc = (*DEEP_SENDQ, "--irc", "tcp:0:interface=127.0.0.1")
    return side_by_side("irc", IRC_SERVERS, irc, runs, receivers, duration, latency=seconds)


def print_irc(row: dict, receivers: int) -> None:
    if not row:
        return
    tcp, gateway, ngircd = (row[label] for label, *_ in IRC_SERVERS)
    title = f"fan-out to {receivers} + 4 senders; latency at 200 msg/s"
    print(f"\n{title:<44} {'deliveries/s':>14} {'bound by':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for label, r in row.items():
        print(
            f"{label:<44} {r['deliveries_per_s']:>14,.0f} {r['bottleneck']:>10} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
        )
    print(f"{'IRC gateway ÷ our TCP':<44} {gateway['deliveries_per_s'] / tcp['deliveries_per_s']:>14.2f}")
    print(f"{'IRC gateway ÷ ngircd':<44} {gateway['deliveries_per_s'] / ngircd['deliveries_per_s']:>14.2f}")


def storm_bench(
    runs: int,
    count: int,
    kinds: list[str],
    protos: tuple[int, ...] = (1,),
    ngircd_join: bool = True,
    server_args: tuple[str, ...] = (),
) -> dict:
    """``count`` clients log in to one room, 8 at a time, and stay; every
    JOINED reaches everyone (the naive baseline announces nothing; in a big
    room, benchmarks/storm.py says what is promised). Ours once for each
    protocol version of ``protos`` ("ours" is version 1, "ours_v2" version
    2); ngircd's clients JOIN #general, or with ``ngircd_join`` false only
    register ("ngircd_register")."""
    row = {}
    drain = str(max(120, count // 10))
    for kind in kinds:
        variants: list[tuple[str, tuple[str, ...]]] = [(kind, ())]
        if kind == "ours":
            variants = [("ours" if p == 1 else f"ours_v{p}", ("--proto", str(p))) for p in protos]
        elif kind == "ngircd" and not ngircd_join:
            variants = [("ngircd_register", ("--no-join",))]
        for label, extra in variants:
            wait = "0" if kind == "naive" else drain  # it announces nothing: no JOINED to wait for
            args = ("--connections", str(count), "--at-once", "8", "--drain", wait, *extra)
            measured = repeated(
                kind, runs, "storm", *args, timeout=float(drain) + 600, server_args=server_args
            )
            row[label] = storm_summary(measured)
            if kind == "naive":  # nothing was promised: it announces nothing
                row[label].update(joined_missing=0, announces_nothing=True)
            print(f"  storm {label:<15} {count} {storm_said(row[label])}", flush=True)
    return row


def storm_summary(measured: list[dict]) -> dict:
    """A storm's runs: medians, and what was missing in all of them."""
    keys = ["logins_per_s", "seconds", "settled_seconds", "server_cpu_avg", "generator_cpu"]
    keys += [k for k in ("room_bytes_median", "room_bytes_max", "welcome_bytes_median") if k in measured[0]]
    row = {key: median_of(measured, key) for key in keys}
    row.update(
        joined_missing=sum(r["joined_missing"] for r in measured),
        count_missing=sum(r.get("count_missing", 0) for r in measured),
        lazy=any(r.get("lazy") for r in measured),
        bound=bounds(measured),
        runs=measured,
    )
    return row


def storm_said(r: dict) -> str:
    said = (
        f"logins at {r['logins_per_s']:,.0f}/s: {r['seconds']:.1f} s, settled after "
        f"{r['settled_seconds']:.1f} s (JOINED missing {r['joined_missing']}, count missing "
        f"{r['count_missing']}); server cpu {r['server_cpu_avg']:.0%}, generator cpu "
        f"{r['generator_cpu']:.0%}; bound {r['bound']}"
    )
    if "room_bytes_median" in r:
        said += (
            f"; the joiner's room list {r['room_bytes_median']:,.0f} B median, "
            f"{r['room_bytes_max']:,.0f} B max{' (lazy)' if r['lazy'] else ''}"
        )
    return said


def big_storm_bench(runs: int, wanted: int) -> dict:
    """The storm of ``wanted`` version 2 clients into one room, or as many
    as one server process may hold here (said plainly when fewer)."""
    from benchmarks.crowd import SERVER_OWN_FILES, open_files_limit, server_connection_cap

    count = min(wanted, server_connection_cap())
    if count < wanted:
        print(
            f"  storm: {wanted:,} logins are not possible here: a process may open at most "
            f"{open_files_limit():,} files (ulimit -Hn), a hard limit that cannot be raised here; "
            f"less {SERVER_OWN_FILES} for the server's own files, {count:,} connections it is",
            flush=True,
        )
    # A generator reading 20,000 sockets falls behind the presence of every
    # login written to each: a deep sendq, or it gets them cut as slow
    # consumers. The storm outlasts idle_timeout, and its clients answer no
    # PING: not pinged, or the first ones are dropped as idle.
    row = storm_bench(runs, count, ["ours"], protos=(2,), server_args=(*DEEP_SENDQ, *CROWD_SERVER))
    return {"wanted": wanted, "connections": count, "files_limit": open_files_limit(), **row}


#: The crowd's server: connections are not pinged while it is measured
#: (the pings of 20,000 connections every 30 s would be load of their own).
CROWD_SERVER = ("--ping-interval", "3600", "--idle-timeout", "7200")


def crowd_bench(runs: int, wanted: int, seconds: str, hold: float) -> dict:
    """``wanted`` idle version 2 connections (or as many as a server process
    may hold here, less the latency run's 101), logged in by several
    generator processes from several loopback addresses: the server's RSS
    per connection and the time for all to log in; then latency at 200
    msg/s in a room of 100, against the same on a server without the
    crowd, as a ratio; and the control, the same beside as many plain
    loopback connections that are not the server's (what the kernel makes
    of so many sockets); interleaved, a fresh server each time."""
    from benchmarks.crowd import SERVER_OWN_FILES, open_files_limit, server_connection_cap, spread

    latency_clients = 101
    cap = server_connection_cap() - latency_clients
    count = min(wanted, cap)
    if count < wanted:
        print(
            f"  crowd: {wanted:,} connections are not possible here: a process may open at most "
            f"{open_files_limit():,} files (ulimit -Hn), a hard limit that cannot be raised here; "
            f"less {SERVER_OWN_FILES} for the server's own files and {latency_clients} for the latency "
            f"run, {count:,} it is",
            flush=True,
        )
    lat = ["--receivers", "100", "--rate", "200", "--duration", seconds]
    alone: list[dict] = []
    crowded: list[dict] = []
    bare: list[dict] = []
    for _ in range(runs):
        with big_server() as (pid, port):
            alone.append(generate(port, "frames", "latency", *lat, pid=pid))
        with big_server() as (pid, port):
            crowded.append(crowd_run(pid, port, spread(count), lat, hold))
        with big_server() as (pid, port):
            bare.append(bare_run(pid, port, count, lat, hold))
    row = {
        "wanted": wanted,
        "connections": count,
        "files_limit": open_files_limit(),
        "processes": len(spread(count)),
        "alone": {k: median_of(alone, k) for k in ("p50_ms", "p99_ms", "max_ms")},
        "bare": {k: median_of(bare, k) for k in ("p50_ms", "p99_ms", "max_ms")},
        **{k: median_of(crowded, k) for k in ("p50_ms", "p99_ms", "max_ms", "login_seconds")},
        **{k: median_of(crowded, k) for k in ("logins_per_s", "bytes_per_connection")},
        "alive": min(r["alive"] for r in crowded),
        "runs": crowded,
        "alone_runs": alone,
        "bare_runs": bare,
    }
    row["p50_ratio"] = row["p50_ms"] / row["alone"]["p50_ms"]
    row["p99_ratio"] = row["p99_ms"] / row["alone"]["p99_ms"]
    row["bare_p99_ratio"] = row["bare"]["p99_ms"] / row["alone"]["p99_ms"]
    row["server_p99_ratio"] = row["p99_ms"] / row["bare"]["p99_ms"]
    print(
        f"  crowd {count:,} idle connections from {row['processes']} processes: all logged in after "
        f"{row['login_seconds']:.1f} s ({row['logins_per_s']:,.0f}/s; {saturated(crowded, 'logins')}), "
        f"{row['bytes_per_connection']:,.0f} B of server RSS each, {row['alive']:,} still open; latency at "
        f"200 msg/s to 100: p50 {row['p50_ms']:.2f} p99 {row['p99_ms']:.2f} ms with the crowd, "
        f"{row['alone']['p50_ms']:.2f} / {row['alone']['p99_ms']:.2f} ms without: "
        f"{row['p50_ratio']:.2f}x / {row['p99_ratio']:.2f}x ({saturated(crowded, 'latency')}); "
        f"beside {count:,} plain loopback connections that are not the server's: p99 "
        f"{row['bare']['p99_ms']:.2f} ms, {row['bare_p99_ratio']:.2f}x without (the machine's share), "
        f"the crowd {row['server_p99_ratio']:.2f}x that (the server's own)",
        flush=True,
    )
    return row


@contextmanager
def big_server():
    """Our server allowed every file this machine allows a process, and
    as many connections (the crowd's own settings otherwise)."""
    from benchmarks.crowd import open_files_limit, server_connection_cap

    folder = tempfile.mkdtemp(prefix="chatbench-")
    extra = (*CROWD_SERVER, "--max-clients", str(server_connection_cap()))
    argv = server_argv("ours", f"{folder}/bench.sqlite3", extra)
    limit = open_files_limit()
    files = ["prlimit", f"--nofile={limit}:{limit}"] if shutil.which("prlimit") else []
    proc, ports = start_server(argv, 1, prefix=[*pinned(0), *files])
    try:
        yield proc.pid, ports[-1]
    finally:
        stop_server(proc, folder, wait=30)


def crowd_run(pid: int, port: int, shares: list[tuple[str, int]], lat: list[str], hold: float) -> dict:
    """One crowd: the generator processes log in their ``shares`` (source
    address, connections) at once, pinned beside each other on core 1; the
    server's RSS before, and after the crowd held still for ``hold``
    seconds; then the latency run while they stay."""
    from benchmarks.loadgen import core_busy, core_times

    before = rss_kib(pid)
    cores0, cpu0, t0 = core_times(), cpu_seconds(pid), time.monotonic()
    with holding(port, shares) as (ready, holders):
        login_wall = time.monotonic() - t0
        logins = {
            "cores_busy": core_busy(cores0, core_times()),
            "server_cpu": (cpu_seconds(pid) - cpu0) / login_wall,
            "generator_cpu": sum(cpu_seconds(h.pid) for h in holders) / login_wall,
        }
        login_seconds = max(r["done"] for r in ready) - min(r["started"] for r in ready)
        time.sleep(hold)
        held = rss_kib(pid)
        count = sum(r["connections"] for r in ready)
        cores0 = core_times()
        result = generate(port, "frames", "latency", *lat, "--settle", "3", pid=pid)
        result["latency_cores_busy"] = core_busy(cores0, core_times())
        result["latency_server_cpu"] = result["server_cpu_avg"]
        result["latency_generator_cpu"] = result["generator_cpu"]
    result.update(
        connections=count,
        alive=sum(e.get("alive", 0) for e in holders.ends),
        login_seconds=login_seconds,
        logins_per_s=count / login_seconds,
        logins_cores_busy=logins["cores_busy"],
        logins_server_cpu=logins["server_cpu"],
        logins_generator_cpu=logins["generator_cpu"],
        rss_before_kib=before,
        rss_held_kib=held,
        bytes_per_connection=(held - before) * 1024 / count,
    )
    return result


def bare_run(pid: int, port: int, count: int, lat: list[str], hold: float) -> dict:
    """The crowd's control: ``count`` loopback connections held by plain
    processes (both ends, none of them the server's) for ``hold`` seconds,
    then the latency run beside them: what so many sockets cost this
    machine's kernel, whatever holds them."""
    from benchmarks.crowd import spread

    with holding(port, spread(count, files_each=2), bare=True):
        time.sleep(hold)
        return generate(port, "frames", "latency", *lat, "--settle", "3", pid=pid)


class Holders(list):
    """The crowd's generator processes; ``ends``: what each said when told
    to let go (filled once :func:`holding`'s block is over)."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[dict] = []


@contextmanager
def holding(
    port: int, shares: list[tuple[str, int]], bare: bool = False
) -> Iterator[tuple[list[dict], Holders]]:
    """Generator processes (benchmarks/crowd.py) pinned on core 1, one per
    share (source address, connections), logged in to the server on
    ``port`` (or, ``bare``, holding plain connections of their own);
    yields what each said once ready, and the processes. On the way out
    they let go; killed if an error cut the run short."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    holders = Holders()
    try:
        for k, (source, share) in enumerate(shares):
            argv = [PY, "-m", "benchmarks.crowd", "--port", str(port), "--connections", str(share)]
            argv += ["--source", source, "--prefix", f"c{k}x", *(["--bare"] if bare else [])]
            holders.append(
                subprocess.Popen(
                    [*pinned(1), *argv],
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        ready = [
            json.loads(h.stdout.readline() or "{}") for h in holders
        ]  # each blocks until its share is in
        if not all(r.get("ready") for r in ready):
            raise RuntimeError(f"crowd: a generator failed: {ready}")
        yield ready, holders
        for h in holders:
            h.stdin.write("done\n")
            h.stdin.flush()
        holders.ends = [json.loads(h.stdout.readline() or "{}") for h in holders]
        for h in holders:
            h.wait(60)
    finally:
        for h in holders:  # on the way out by an error: they would hold on for their timeout
            if h.poll() is None:
                h.kill()
                h.wait()


def saturated(runs: list[dict], phase: str) -> str:
    """Which side was saturated in each run's ``phase`` ("logins" or
    "latency"): the server process or the generators (90% of a core or
    more), else a core kept busy by others too (the machine may be shared)."""
    said = []
    for r in runs:
        server, generator = r[f"{phase}_server_cpu"], r[f"{phase}_generator_cpu"]
        busy = r[f"{phase}_cores_busy"]
        side = "server" if server >= 0.9 else "generator" if generator >= 0.9 else "neither"
        if side == "neither" and max(busy.values(), default=0.0) >= 0.9:
            side = "server's core (shared)" if busy.get("cpu0", 0) >= 0.9 else "generator's core (shared)"
        said.append(
            f"{side}: server {server:.0%}, generator {generator:.0%}, "
            f"cores {busy.get('cpu0', 0):.0%}/{busy.get('cpu1', 0):.0%}"
        )
    return "; ".join(said)


def reconnect_bench(count: int) -> dict:
    """``count`` desktop-protocol clients connected; the server restarts on
    the same port (SIGTERM, then a new process at once); the clients come
    back with the desktop client's backoff. The curve: how many are back,
    second by second after the drop."""
    folder = tempfile.mkdtemp(prefix="chatbench-")
    argv = load_server_argv(f"{folder}/bench.sqlite3", port=free_port())  # the same port after the restart
    proc, port = start_pinned(argv)
    loadgen = [PY, "-m", "benchmarks.loadgen", "reconnect", "--port", str(port), "--connections", str(count)]
    gen = subprocess.Popen(
        [*pinned(1), *loadgen],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
        stdout=subprocess.PIPE,
        text=True,
    )
    result = {}
    try:
        for line in gen.stdout:
            data = json.loads(line)
            if data.get("ready"):
                proc.terminate()
                proc.wait(60)
                proc, _ = start_pinned(argv)
            else:
                result = data
        gen.wait(600)
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"  reconnect {count} clients: {result.get('back')} back, all after {result.get('all_back_s')} s; "
        f"second by second: {result.get('curve')}",
        flush=True,
    )
    return result


def passwords_bench(runs: int, count: int) -> dict:
    """Guest logins next to logins with a password (scrypt on the server's
    worker threads), both in each run, 8 in flight; a fresh server each run."""
    measured = repeated("ours", runs, "passwords", "--connections", str(count))
    for r in measured:
        r["ratio"] = r["guest_per_s"] / r["password_per_s"]
    row = {key: median_of(measured, key) for key in ("guest_per_s", "password_per_s", "ratio")}
    row.update(logins=count, runs=measured)
    print(
        f"  passwords guest {row['guest_per_s']:,.0f} logins/s, with a password "
        f"{row['password_per_s']:,.1f} logins/s: guest ÷ password {row['ratio']:.0f}",
        flush=True,
    )
    return row


#: The abuse scenario's floods, as benchmarks/loadgen.py names them: one
#: Int32 client pipelining one packet, then the other transports and the
#: floods of many connections.
FLOODS = ["history", "ping", "bad", "say"]
#: Floods of a version 2 client in the bystanders' room (docs/protocol.md
#: 19): REACT toggling one emoji on and off a message, and TYPING; their
#: bystanders speak version 2 too (they get the CHANGED and TYPING the
#: flood makes), so they have a quiet line of their own, "none-v2".
CONVERSATION_FLOODS = ["none-v2", "react", "typing"]
OTHER_FLOODS = [
    "ws-ping",
    "ws-ping-unread",
    "ws-fragments",
    "irc-blank",
    "irc-not-utf8",
    "list",
    "guesses",
    "slowloris",
]
#: As in the issue that asked for fairness: a history of 20,000 messages.
ABUSE_HISTORY = 20_000


def prefilled_history(folder: str) -> str:
    from chatproto.backends.eventlog import Draft
    from chatproto.backends.sqlite import SQLiteLog

    path = os.path.join(folder, "abuse.sqlite3")
    log = SQLiteLog(path)
    log.append([Draft(1.0, "filler", f"history {n} " + "h" * 80) for n in range(ABUSE_HISTORY)])
    log.close()
    return path


#: The conversations scenario's kinds of request, SAY first: the others
#: are reported as ratios to it (docs/protocol.md 19).
CONVERSATION_KINDS = ("say", "edit", "react", "typing")
#: Its server passes on every TYPING: its --typing-interval at a
#: microsecond (the limit must be above 0; every request takes longer).
TYPING_INTERVAL = "0.000001"


def conversations_bench(runs: int, duration: list[str], members: int = 10) -> dict:
    """``members`` version 2 sessions in one room each sending one kind of
    request as fast as the server delivers them (SAY, EDIT of their own
    message, REACT toggled on and off their own message, TYPING passed on
    every time): the server's CPU per request and the packets delivered a
    second, each kind against a fresh server, the kinds interleaved in each
    run, and each kind's cost as a ratio to the SAY of the same run."""
    measured: dict[str, list[dict]] = {kind: [] for kind in CONVERSATION_KINDS}
    extra = (*DEEP_SENDQ, "--typing-interval", TYPING_INTERVAL)
    for _ in range(runs):
        for kind in CONVERSATION_KINDS:
            with server("ours", extra) as (pid, port):
                args = ["--kind", kind, "--members", str(members), "--window", "4000", *duration]
                measured[kind].append(
                    generate(port, "frames", "conversations", *args, "--server-pid", str(pid), pid=pid)
                )
        say = measured["say"][-1]
        for kind in CONVERSATION_KINDS:
            r = measured[kind][-1]
            r["cost_vs_say"] = r["us_per_request"] / say["us_per_request"]
            r["deliveries_vs_say"] = r["deliveries_per_s"] / say["deliveries_per_s"]
    row: dict = {"members": members}
    for kind in CONVERSATION_KINDS:
        runs_of = measured[kind]
        keys = (
            "requests_per_s",
            "deliveries_per_s",
            "us_per_request",
            "us_per_delivery",
            "bytes_per_delivery",
            "server_cpu",
            "generator_cpu",
            "passed_on",
            "cost_vs_say",
            "deliveries_vs_say",
        )
        r = row[kind] = {key: median_of(runs_of, key) for key in keys}
        r["bound"] = "/".join(shared_bottleneck(x) for x in runs_of)
        r["core0_busy"] = statistics.median(x["cores_busy"].get("cpu0", 0) for x in runs_of)
        r["deliveries_per_cpu_s"] = 1e6 / r["us_per_delivery"]
        r["cut"] = sum(x["cut"] for x in runs_of)
        r["runs"] = runs_of
        print(
            f"  conversations {kind:<6} {r['us_per_request']:6.1f} us server CPU per request "
            f"({r['cost_vs_say']:.2f}x SAY), {r['requests_per_s']:,.0f} requests/s, "
            f"{r['deliveries_per_s']:,.0f} delivered/s ({r['deliveries_vs_say']:.2f}x SAY), "
            f"{r['deliveries_per_cpu_s']:,.0f} per server CPU-second, "
            f"{r['bytes_per_delivery']:.0f} B each, passed on {r['passed_on']:.1%}; server cpu "
            f"{r['server_cpu']:.0%} (its core {r['core0_busy']:.0%} busy) generator cpu "
            f"{r['generator_cpu']:.0%}; bound {r['bound']}",
            flush=True,
        )
    return row


def shared_bottleneck(run: dict) -> str:
    """As :func:`bottleneck`, but naming a core kept busy by others too: on
    a shared machine a server at 40% of its core may be waiting for it."""
    own = bottleneck(run)
    if own != "neither":
        return own
    cores = run.get("cores_busy", {})
    if cores.get("cpu0", 0) >= 0.9:
        return "server's core (shared)"
    if cores.get("cpu1", 0) >= 0.9:
        return "generator's core (shared)"
    return "neither"


def print_conversations(row: dict) -> None:
    members = row["members"]
    title = f"{members} members in one room, each sending one kind"
    print(
        f"\n{title:<44} {'us/request':>10} {'÷SAY':>6} {'requests/s':>11} {'delivered/s':>12} "
        f"{'÷SAY':>6} {'per CPU-s':>10} {'B each':>7}  bound by"
    )
    names = {
        "say": "SAY (MESSAGE to each)",
        "edit": "EDIT of one's message (CHANGED to each)",
        "react": "REACT on/off (CHANGED to each)",
        "typing": "TYPING, every one passed on",
    }
    for kind in CONVERSATION_KINDS:
        r = row[kind]
        print(
            f"{names[kind]:<44} {r['us_per_request']:>10.1f} {r['cost_vs_say']:>6.2f} "
            f"{r['requests_per_s']:>11,.0f} {r['deliveries_per_s']:>12,.0f} {r['deliveries_vs_say']:>6.2f} "
            f"{r['deliveries_per_cpu_s']:>10,.0f} {r['bytes_per_delivery']:>7.0f}  {r['bound']}"
        )


#: The catch-up scenario's room: 10,000 messages; in the changed one, every
#: tenth edited and every tenth (others) with reactions (docs/protocol.md 19).
CATCHUP_MESSAGES = 10_000
#: Each reacted message's reactions: two emoji, three reactions.
CATCHUP_REACTIONS = (("alice", "\U0001f44d"), ("bob", "\U0001f44d"), ("carol", "\U0001f389"))


def prefilled_conversation(folder: str, changed: bool) -> str:
    """A history file of CATCHUP_MESSAGES in the default room (about 100
    bytes of text each, ten authors); with ``changed``, seqs 10, 20, ...
    edited (same length of text) and seqs 5, 15, ... reacted to, through the
    log as the server applies changes."""
    from chatproto.backends.eventlog import EDIT, REACT, Change, Draft
    from chatproto.backends.sqlite import SQLiteLog
    from chatproto.rules import DEFAULT_ROOM

    path = os.path.join(folder, "changed.sqlite3" if changed else "plain.sqlite3")
    log = SQLiteLog(path)
    authors = [f"user{k}" for k in range(10)]
    log.append(
        [
            Draft(1.0 + n, authors[n % 10], f"message {n:05} " + "h" * 86, author=authors[n % 10])
            for n in range(CATCHUP_MESSAGES)
        ]
    )
    if changed:
        changes = []
        for seq in range(10, CATCHUP_MESSAGES + 1, 10):
            who = authors[(seq - 1) % 10]
            text = f"message {seq - 1:05} edit " + "e" * 81
            changes.append(Change(EDIT, DEFAULT_ROOM, seq, 20_000.0 + seq, who, who, text=text))
        for seq in range(5, CATCHUP_MESSAGES + 1, 10):
            for nick, emoji in CATCHUP_REACTIONS:
                changes.append(Change(REACT, DEFAULT_ROOM, seq, 30_000.0 + seq, nick, nick, emoji=emoji))
        outcomes: list = []
        log.append(changes).addCallback(outcomes.extend)  # SQLite's fire at once
        refused = [o for o in outcomes if isinstance(o, Exception)]
        if len(outcomes) != len(changes) or refused:
            raise RuntimeError(f"prefilling changes: {len(outcomes)} outcomes, refused {refused[:3]}")
    log.close()
    return path


def catchup_bench(runs: int, repeats: int) -> dict:
    """A client fetching a room of CATCHUP_MESSAGES (pages of HISTORY after,
    and before, of the server's largest page) and its changes
    (``changed_after``), on a plain history and on the same one with 10%
    edited and 10% reacted to; a fresh server (its fair share lifted: the
    fetch, not the budget, is measured) for each, both in each run; ratios
    within a run, medians over runs."""
    measured: dict[str, list[dict]] = {"plain": [], "changed": []}
    for _ in range(runs):
        for store in measured:
            folder = tempfile.mkdtemp(prefix="chatcatchup-")
            try:
                history = prefilled_conversation(folder, store == "changed")
                proc, port = start_pinned(server_argv("ours", history))
                try:
                    args = ("--repeats", str(repeats), "--server-pid", str(proc.pid))
                    measured[store].append(generate(port, "frames", "catchup", *args, pid=proc.pid))
                finally:
                    proc.terminate()
                    proc.wait(10)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        plain, changed = measured["plain"][-1], measured["changed"][-1]
        base = plain["after"]
        for result in (plain, changed):
            for way in ("after", "before", "changes"):
                r = result[way]
                r["time_vs_plain"] = r["seconds"] / base["seconds"]
                r["bytes_vs_plain"] = r["bytes"] / base["bytes"]
                r["cpu_vs_plain"] = r["server_cpu_s"] / base["server_cpu_s"] if base["server_cpu_s"] else 0.0
    row: dict = {"messages": CATCHUP_MESSAGES, "repeats": repeats}
    for store, runs_of in measured.items():
        row[store] = {}
        for way in ("after", "before", "changes"):
            of = [r[way] for r in runs_of]
            keys = ("seconds", "bytes", "server_cpu_s", "generator_cpu_s")
            keys += ("time_vs_plain", "bytes_vs_plain", "cpu_vs_plain")
            r = row[store][way] = {key: median_of(of, key) for key in keys}
            r.update(pages=of[0]["pages"], messages=of[0]["messages"])
            print(
                f"  catchup {store:<7} {way:<7} {r['messages']:>6} messages in {r['pages']:>3} pages: "
                f"{r['seconds'] * 1000:8.1f} ms ({r['time_vs_plain']:.2f}x plain history), "
                f"{r['bytes'] / 1e6:6.2f} MB ({r['bytes_vs_plain']:.2f}x), "
                f"server CPU {r['server_cpu_s'] * 1000:.0f} ms, "
                f"generator CPU {r['generator_cpu_s'] * 1000:.0f} ms",
                flush=True,
            )
    row["runs"] = measured
    return row


def print_catchup(row: dict) -> None:
    title = f"catching up a room of {row['messages']:,} messages"
    print(f"\n{title:<52} {'pages':>6} {'ms':>8} {'÷plain':>7} {'MB':>7} {'÷plain':>7} {'CPU ms':>7}")
    names = {
        ("plain", "after"): "plain: whole history, HISTORY after",
        ("plain", "before"): "plain: whole history, HISTORY before",
        ("changed", "after"): "10% edited, 10% reacted: whole history, after",
        ("changed", "before"): "10% edited, 10% reacted: whole history, before",
        ("changed", "changes"): "10% edited, 10% reacted: changed_after 0",
    }
    for (store, way), name in names.items():
        r = row[store][way]
        print(
            f"{name:<52} {r['pages']:>6} {r['seconds'] * 1000:>8.1f} {r['time_vs_plain']:>7.2f} "
            f"{r['bytes'] / 1e6:>7.2f} {r['bytes_vs_plain']:>7.2f} {r['server_cpu_s'] * 1000:>7.0f}"
        )


@contextmanager
def redis_server(core: int = 1):
    """A Valkey for cluster nodes, pinned beside the generator (the nodes
    have core 0); yields (pid, url, port). Synced once a second, as a
    deployment that takes that trade-off would run it."""
    folder = tempfile.mkdtemp(prefix="chatbench-redis-")
    port = free_port()
    proc = start_redis(folder, port, "everysec", prefix=pinned(core))
    try:
        yield proc.pid, f"redis://127.0.0.1:{port}/0", port, "chat:r:general:seq"
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def replicated_redis(core: int = 1):
    """A Valkey primary with one replica that confirms each write, and a
    Sentinel that knows them (``--cluster-min-replicas 1``), pinned beside
    the generator; yields (the primary's pid, the sentinel:// url, the
    primary's port) once the replica is in sync."""
    folder = tempfile.mkdtemp(prefix="chatbench-sentinel-")
    primary, replica, sentinel = free_port(), free_port(), free_port()
    safety = ("--min-replicas-to-write", "1", "--repl-diskless-sync-delay", "0")
    procs = []
    try:
        for port, extra in ((primary, ()), (replica, ("--replicaof", "127.0.0.1", str(primary)))):
            os.makedirs(f"{folder}/{port}")
            procs.append(start_redis(f"{folder}/{port}", port, "everysec", pinned(core), (*safety, *extra)))
        for _ in range(300):  # the replica's first sync: at most 30 s
            if b"connected_slaves:1" in redis_ask(primary, "INFO", "replication"):
                break
            time.sleep(0.1)
        procs.append(
            start_sentinel(sentinel_config(folder, sentinel, "chat", primary, quorum=1), pinned(core))
        )
        yield procs[0].pid, f"sentinel://127.0.0.1:{sentinel}/chat", primary, "chat:r:general:seq"
    finally:
        _stop_all(procs, folder)


@contextmanager
def sharded_redis(core: int = 1, shards: int = 3):
    """A Redis Cluster of ``shards`` primaries, each with a replica, pinned
    beside the generator; yields (the pid of the primary that serves the
    room ``general``, the redis-cluster:// url, that primary's port, the
    room's seq key) once the cluster is ok."""
    folder = tempfile.mkdtemp(prefix="chatbench-shards-")
    primaries = [free_port() for _ in range(shards)]
    ports = [*primaries, *(free_port() for _ in range(shards))]
    buses = {port: free_port() for port in ports}
    procs = []
    try:
        procs = start_redis_cluster(folder, primaries, ports[shards:], "everysec", pinned(core), buses)
        seq = "chat:r:{general}:seq"
        slot = ask_redis(primaries[0], "CLUSTER", "KEYSLOT", seq)
        for first, last, primary, *_ in ask_redis(primaries[0], "CLUSTER", "SLOTS"):
            if first <= slot <= last:
                port = int(primary[1])
        url = "redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in primaries)
        yield procs[ports.index(port)].pid, url, port, seq
    finally:
        _stop_all(procs, folder)


def _stop_all(procs: list, folder: str) -> None:
    """Every Redis process of a set-up stopped, then its folder removed."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)
    shutil.rmtree(folder, ignore_errors=True)


def redis_ask(port: int, *command: str) -> bytes:
    """One command's whole reply, raw, on a socket of its own."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            f"*{len(command)}\r\n".encode() + b"".join(f"${len(c)}\r\n{c}\r\n".encode() for c in command)
        )
        return s.recv(65536)


def redis_get(port: int, key: str) -> bytes | None:
    """One GET, on a socket of its own (the bench reads a counter)."""
    reply = redis_ask(port, "GET", key)
    if reply.startswith(b"$-1"):
        return None
    return reply.split(b"\r\n")[1]


@contextmanager
def member(port: int, nick: str):
    """A logged-in client that only listens (it makes a node follow the room)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(codec.frame(codec.encode(codec.Login(nick, 1))))
        s.recv(65536)
        yield s


def cluster_bench(runs: int, receivers: int, duration: list[str], seconds: str) -> dict:
    """One node's fan-out without --cluster, with it (alone on its Redis),
    with a second node following the room, alone on a primary whose
    replica confirms every write (Sentinel, --cluster-min-replicas 1), and
    on a Redis Cluster of 3 shards (alone, and followed); Redis's (the
    room's primary's) CPU per message; the latency of a message from a
    sender on one node to receivers on another, on each Redis set-up."""
    args = ["--receivers", str(receivers), *duration]
    setups = {
        "cluster": (redis_server, ()),
        "sentinel": (replicated_redis, ("--cluster-min-replicas", "1")),
        "shards": (sharded_redis, ()),
    }
    rows: dict = {"single": [], "cluster": [], "cluster_2": [], "sentinel": [], "shards": [], "shards_2": []}
    for _ in range(runs):
        rows["single"].append(measure_fanout_cpu("ours", receivers, duration))
        for label, others, (redis, options) in (
            ("cluster", 0, setups["cluster"]),
            ("cluster_2", 1, setups["cluster"]),
            ("sentinel", 0, setups["sentinel"]),
            ("shards", 0, setups["shards"]),
            ("shards_2", 1, setups["shards"]),
        ):
            with redis() as (rpid, url, rport, seq_key):
                node_args = ("--cluster", url, *options)
                with server("ours", node_args) if others else nullcontext() as node:
                    with member(node[1], "follower") if others else nullcontext():
                        r0 = cpu_seconds(rpid)
                        result = measure_cpu("ours", "fanout", args, (*DEEP_SENDQ, *node_args))
                        stored = int(redis_get(rport, seq_key) or 0)
                        result["redis_cpu"] = (cpu_seconds(rpid) - r0) / result["wall"]
                        result["redis_us_per_message"] = (cpu_seconds(rpid) - r0) / max(1, stored) * 1e6
                        result["stored"] = stored
                rows[label].append(result)
    summary = {
        label: summarize(measured, *(("redis_us_per_message", "redis_cpu") if label != "single" else ()))
        for label, measured in rows.items()
    }
    latency: dict = {"single": [], "cross": [], "cross_sentinel": [], "cross_shards": [], "relayed": []}
    lat = ["--receivers", "100", "--rate", "200", "--duration", seconds]
    for _ in range(runs):
        latency["single"].append(repeated("ours", 1, "latency", *lat)[0])
        for label, (redis, options) in (
            ("cross", setups["cluster"]),
            ("cross_sentinel", setups["sentinel"]),
            ("cross_shards", setups["shards"]),
            ("relayed", setups["cluster"]),
        ):
            with redis() as (_, url, _port, _seq):
                node_args = ("--cluster", url, *options)
                with server("ours", node_args) as (_, port_a), server("ours", node_args) as (pid_b, port_b):
                    # relayed: the sender is an account's second device on B, its session on A
                    relay = ("--relay-port", str(port_b)) if label == "relayed" else ()
                    latency[label].append(
                        generate(
                            port_b, "frames", "latency", *lat, "--sender-port", str(port_a), *relay, pid=pid_b
                        )
                    )
    for label, measured in latency.items():
        summary[f"latency_{label}"] = {
            "p50_ms": median_of(measured, "p50_ms"),
            "p99_ms": median_of(measured, "p99_ms"),
            "runs": measured,
        }
    single = summary["single"]["deliveries_per_s"]
    summary["ratio"] = summary["cluster"]["deliveries_per_s"] / single
    summary["ratio_2"] = summary["cluster_2"]["deliveries_per_s"] / single
    summary["ratio_sentinel"] = summary["sentinel"]["deliveries_per_s"] / single
    summary["ratio_shards"] = summary["shards"]["deliveries_per_s"] / single
    summary["ratio_shards_2"] = summary["shards_2"]["deliveries_per_s"] / single
    print_cluster(summary, receivers)
    return summary


def print_cluster(row: dict, receivers: int) -> None:
    print(
        f"\n{f'one node, fan-out to {receivers} + 4 senders':<44} {'deliveries/s':>14} {'÷single':>8} "
        f"{'bound by':>10} {'Redis µs/msg':>13} {'Redis CPU':>10}"
    )
    for label, name in (
        ("single", "single process (SQLite)"),
        ("cluster", "--cluster, alone"),
        ("cluster_2", "--cluster, a second node following"),
        ("sentinel", "--cluster sentinel://, 1 replica confirms"),
        ("shards", "--cluster redis-cluster://, 3 shards"),
        ("shards_2", "the same, a second node following"),
    ):
        r = row[label]
        ratio = r["deliveries_per_s"] / row["single"]["deliveries_per_s"]
        redis = (
            f"{r['redis_us_per_message']:>13.1f} {r['redis_cpu']:>10.0%}"
            if label != "single"
            else f"{'-':>13} {'-':>10}"
        )
        print(f"{name:<44} {r['deliveries_per_s']:>14,.0f} {ratio:>8.2f} {bounds(r['runs']):>10} {redis}")
    for label, name in (
        ("latency_single", "latency at 200 msg/s, one process"),
        ("latency_cross", "latency at 200 msg/s, node A -> node B"),
        ("latency_cross_sentinel", "the same, 1 replica confirms"),
        ("latency_cross_shards", "the same, on 3 shards"),
        ("latency_relayed", "the same, sent by a device relayed B -> A"),
    ):
        r = row[label]
        print(f"{name:<44} p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms")


#: What a flood's server needs besides the defaults: 1,000 rooms to list; a
#: request deadline the slow requests meet within the run.
ABUSE_SERVER = {
    "list": tuple(arg for i in range(1000) for arg in ("--room", f"room{i}")),
    "slowloris": ("--login-timeout", "3"),
}


def abuse(runs: int, seconds: str, floods: list[str] | None = None) -> dict:
    """Two bystanders at 200 msg/s in all, timing their echoes, quiet and
    then against one flooder of each kind (or many connections of one
    kind); a fresh server, with the page and IRC on, each time. ``floods``:
    only these (all of them if None). Interleaved (each run goes through
    every flood), so that a busy moment of a shared machine does not fall
    on one flood's runs alone; each run also notes how much of the
    server's core others took meanwhile."""
    chosen = [
        flood
        for flood in ("none", *FLOODS, *OTHER_FLOODS, *CONVERSATION_FLOODS)
        if floods is None or flood in floods
    ]
    measured: dict[str, list[dict]] = {flood: [] for flood in chosen}
    for _ in range(runs):
        for flood in chosen:
            measured[flood].append(abuse_run(flood, seconds))
    row = {}
    for flood in chosen:
        of = measured[flood]
        result = {
            key: median_of(of, key)
            for key in ("p50_ms", "p99_ms", "max_ms", "flood_answers_per_s", "server_rss_kib")
        }
        result["cut"] = [r["flooder_cut"] for r in of]
        result["lost"] = sum(r["expected"] - r["echoes"] for r in of)
        result["runs"] = of
        result["worst_max_ms"] = max(r["max_ms"] for r in of)
        result["others_on_server_core"] = median_of(of, "others_on_server_core")
        calm = [r for r in of if r["others_on_server_core"] < CALM]
        result["calm_runs"] = len(calm)
        if calm:
            result["calm"] = {key: median_of(calm, key) for key in ("p50_ms", "p99_ms", "max_ms")}
        row[flood] = result
        calm_said = (
            f"; in the {len(calm)} run(s) where others took under {CALM:.0%} of the server's core: "
            f"p99 {result['calm']['p99_ms']:.2f} max {result['calm']['max_ms']:.1f} ms"
            if calm
            else f"; no run had the server's core to itself (others took {CALM:.0%} or more)"
        )
        print(
            f"  abuse {flood:<14} bystanders' echo p50 {result['p50_ms']:.2f} p99 {result['p99_ms']:.2f} "
            f"max {result['max_ms']:.1f} ms; flooder answered {result['flood_answers_per_s']:,.0f}/s, "
            f"cut {result['cut']}; echoes lost {result['lost']}; "
            f"server RSS {result['server_rss_kib'] / 1024:.0f} MB; others on the server's core "
            f"{result['others_on_server_core']:.0%} (median){calm_said}",
            flush=True,
        )
        if flood in CONVERSATION_FLOODS[1:]:
            print(f"  abuse {flood:<14} {abuse_target(row, flood)}", flush=True)
    return row


#: A run is calm when other processes took less than this share of the
#: server's core while the bystanders spoke (the machine may be shared).
CALM = 0.10


def abuse_run(flood: str, seconds: str) -> dict:
    """One abuse run: a fresh server with a prefilled history, the page and IRC on."""
    folder = tempfile.mkdtemp(prefix="chatabuse-")
    argv = load_server_argv(
        prefilled_history(folder),
        "--rate",
        "200",
        "--burst",
        "400",
        "--web",
        "tcp:0:interface=127.0.0.1",
        "--irc",
        "tcp:0:interface=127.0.0.1",
        *ABUSE_SERVER.get(flood, ()),
    )
    proc, (port, web_port, irc_port) = start_pinned_ports(argv, 3)
    try:
        result = generate(
            port,
            "frames",
            "abuse",
            "--flood",
            flood,
            "--web-port",
            str(web_port),
            "--irc-port",
            str(irc_port),
            "--senders",
            "2",
            "--rate",
            "200",
            "--duration",
            seconds,
            "--drain",
            "30",
            "--server-pid",
            str(proc.pid),
            pid=proc.pid,
        )
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    result["others_on_server_core"] = max(
        0.0, result["cores_busy"].get("cpu0", 0) - result["server_cpu_window"]
    )
    return result


def summarize(runs: list[dict], *medians: str) -> dict:
    """A throughput scenario's runs: medians, what was lost, and which side
    the middle run was bound by."""
    keys = ("deliveries_per_s", "server_cpu", "generator_cpu", *medians)
    return {
        **{key: median_of(runs, key) for key in keys},
        "lost": sum(r["lost"] for r in runs),
        "order_errors": sum(r["order_errors"] for r in runs),
        "bottleneck": bottleneck(sorted(runs, key=lambda r: r["deliveries_per_s"])[len(runs) // 2]),
        "runs": runs,
    }


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def bottleneck(run: dict) -> str:
    """Which side a run was bound by: the one whose core was busy (90% or
    more), the server first; "neither" when both waited (on round trips)."""
    server_cpu = run.get("server_cpu", run.get("server_cpu_avg", 0))
    if server_cpu >= 0.9:
        return "server"
    if run.get("generator_cpu", 0) >= 0.9:
        return "generator"
    return "neither"


def bounds(runs: list[dict]) -> str:
    """Each run's bottleneck, in run order: what make bench marks every figure with."""
    return "/".join(bottleneck(r) for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one run, fewer and smaller scenarios")
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "bench.json"))
    parser.add_argument("--chart", default=os.path.join(ROOT, "docs", "bench-fanout.png"))
    parser.add_argument("--only", nargs="*", default=None, help="scenarios to run")
    parser.add_argument("--floods", nargs="*", default=None, help="abuse: only these floods")
    parser.add_argument(
        "--crowd", type=int, default=100_000, help="crowd: idle connections (capped by the open-file limit)"
    )
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    sizes = [10, 100] if args.quick else [10, 100, 1000]
    kinds = ["ours", "naive", "line"] + (["ngircd"] if os.path.exists(NGIRCD) else [])
    duration = (
        ["--warmup", "0.5", "--duration", "1.5"] if args.quick else ["--warmup", "1", "--duration", "3"]
    )
    every = ["fanout", "rooms", "websocket", "irc", "metrics", "latency", "idle", "logins", "storm"]
    every += ["reconnect", "passwords", "slow", "abuse", "cluster", "conversations", "catchup", "search"]
    every += ["files", "bigstorm", "crowd"]
    wanted = set(args.only or every)
    results: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "pinned": bool(pinned(0)),
        },
        "runs": runs,
    }
    table: list[tuple[str, dict]] = []

    if "fanout" in wanted:
        results["fanout"] = {}
        for receivers in sizes:
            row = {}
            for kind in kinds:
                measured = [measure_fanout_cpu(kind, receivers, duration) for _ in range(runs)]
                row[kind] = summarize(measured)
                print(
                    f"  fanout {receivers:>5} receivers  {kind:<5} "
                    f"{row[kind]['deliveries_per_s']:>12,.0f} deliveries/s  lost {row[kind]['lost']}  "
                    f"server cpu {row[kind]['server_cpu']:.0%}  generator cpu "
                    f"{row[kind]['generator_cpu']:.0%}  bound {bounds(measured)}",
                    flush=True,
                )
            results["fanout"][receivers] = row
            table.append(
                (
                    f"fan-out, {receivers} receivers + 4 senders (deliveries/s)",
                    {k: row[k]["deliveries_per_s"] for k in kinds},
                )
            )

    if "rooms" in wanted:
        results["rooms"] = rooms_bench(runs, duration)

    if "websocket" in wanted:
        results["websocket"] = websocket_bench(runs, 100, duration)

    if "irc" in wanted:
        results["irc"] = irc_bench(runs, 100, duration, "3" if args.quick else "5")

    if "metrics" in wanted:
        results["metrics"] = metrics_bench(runs, duration)
        table.append(
            (
                "fan-out, 10 receivers: --metrics on ÷ off",
                {"ours": results["metrics"]["ratio"]},
            )
        )

    if "latency" in wanted:
        row = {}
        seconds = "3" if args.quick else "5"
        for kind in kinds:
            measured = repeated(
                kind, runs, "latency", "--receivers", "100", "--rate", "200", "--duration", seconds
            )
            row[kind] = {
                "p50_ms": median_of(measured, "p50_ms"),
                "p99_ms": median_of(measured, "p99_ms"),
                "max_ms": median_of(measured, "max_ms"),
                "runs": measured,
            }
            print(
                f"  latency {kind:<5} p50 {row[kind]['p50_ms']:.2f} ms  p99 {row[kind]['p99_ms']:.2f} ms",
                flush=True,
            )
        results["latency"] = row
        table.append(("latency p99 at 200 msg/s, 100 receivers (ms)", {k: row[k]["p99_ms"] for k in kinds}))

    if "logins" in wanted:
        row = {}
        # Not ngircd: it stalls under a thousand registrations at once (the storm compares logins with it).
        for kind in [k for k in ("ours", "naive") if k in kinds]:
            measured = repeated(kind, runs, "logins", "--connections", "1000")
            row[kind] = {"seconds": median_of(measured, "seconds"), "runs": measured}
            print(f"  logins {kind:<5} 1000 in {row[kind]['seconds']:.3f} s", flush=True)
        results["logins"] = row
        table.append(("1000 concurrent logins (s)", {k: row[k]["seconds"] for k in row}))

    if "storm" in wanted:
        # Ours in protocol version 1 and 2. ngircd registers its clients and
        # JOINs them to #general at 1,000; at 5,000 that takes it longer than
        # a bench can wait (docs/performance.md), so there it only registers.
        results["storm"] = {}
        for count in (1000,) if args.quick else (1000, 5000):
            who = [k for k in ("ours", "naive", "ngircd") if k in kinds]
            row = storm_bench(runs, count, who, protos=(1, 2), ngircd_join=count <= 1000)
            results["storm"][count] = row
            ngircd = "ngircd" if "ngircd" in row else "ngircd_register"
            for version, ours in ((1, "ours"), (2, "ours_v2")):
                values = {"ours": row[ours]["logins_per_s"]}
                values.update({k: row[k]["logins_per_s"] for k in ("naive",) if k in row})
                if ngircd in row:
                    values["ngircd"] = row[ngircd]["logins_per_s"]
                only = "; ngircd without JOIN" if ngircd != "ngircd" else ""
                name = f"login storm {count} into one room, v{version} (logins/s{only})"
                table.append((name, values))

    if "bigstorm" in wanted:
        results["bigstorm"] = big_storm_bench(runs, 2000 if args.quick else 20_000)
        r = results["bigstorm"]
        table.append(
            (
                f"login storm {r['connections']} into one room, v2 (logins/s)",
                {"ours": r["ours_v2"]["logins_per_s"]},
            )
        )

    if "crowd" in wanted:
        # 15 s of latency: 3,000 messages, so that the p99 is 30 of them, not 10.
        results["crowd"] = crowd_bench(
            runs, 2000 if args.quick else args.crowd, "3" if args.quick else "15", 3.0 if args.quick else 8.0
        )

    if "reconnect" in wanted:
        results["reconnect"] = reconnect_bench(1000 if args.quick else 5000)

    if "passwords" in wanted:
        results["passwords"] = passwords_bench(runs, 30 if args.quick else 100)

    if "idle" in wanted:
        row = {}
        count = 2000 if args.quick else 10000
        variants = [("ours", "ours", ()), ("ours_v2", "ours", ("--proto", "2"))]
        variants += [(k, k, ()) for k in ("naive", "ngircd") if k in kinds]
        for label, kind, extra in variants:
            with server(kind) as (pid, port):
                before = rss_kib(pid)
                held = {}

                def ready(data, pid=pid, held=held):
                    held["peak"] = rss_kib(pid)  # right after the login storm
                    # Held: what idle connections cost once things settle, three of
                    # the heap trimmer's looks later (a burst's tail goes back once
                    # the heap has settled, at the second look after it: service.py).
                    time.sleep(15)
                    held["rss"] = rss_kib(pid)
                    held["login_seconds"] = data["seconds"]

                mode, many = mode_of(kind), ("--connections", str(count), *extra)
                result = generate(port, mode, "idle", *many, pid=pid, on_ready=ready, timeout=900)
            per = (held["rss"] - before) * 1024 / count
            row[label] = {
                "connections": count,
                "alive": result["alive"],
                "rss_before_kib": before,
                "rss_after_logins_kib": held["peak"],
                "rss_held_kib": held["rss"],
                "bytes_per_connection": per,
                "login_seconds": held["login_seconds"],
            }
            print(
                f"  idle {label:<7} {count} held ({result['alive']} alive), {per:,.0f} B each, "
                f"all logged in after {held['login_seconds']:.1f} s",
                flush=True,
            )
        results["idle"] = row
        bytes_each = {k: row[k]["bytes_per_connection"] for k in row}
        v2 = {**bytes_each, "ours": bytes_each["ours_v2"]}
        table.append((f"{count} idle logged-in, v1 in a room (server bytes each)", bytes_each))
        table.append((f"{count} idle logged-in, v2 in no room (server bytes each)", v2))

    if "slow" in wanted:
        row = {}
        for kind in kinds:
            # Long enough to fill the slow reader's kernel buffers and then sendq.
            slow_run = ["--warmup", "1", "--duration", "5", "--slow", "1", "--drain", "5"]
            measured = [measure_fanout_cpu(kind, 100, slow_run, server_args=()) for _ in range(runs)]
            row[kind] = {
                "deliveries_per_s": median_of(measured, "deliveries_per_s"),
                "server_rss_kib": median_of(measured, "server_rss_kib"),
                "slow_cut": sum(r["slow_cut"] for r in measured),
                "lost": sum(r["lost"] for r in measured),
                "runs": measured,
            }
            print(
                f"  slow {kind:<5} {row[kind]['deliveries_per_s']:,.0f} deliveries/s to the others, "
                f"server RSS {row[kind]['server_rss_kib'] / 1024:.0f} MiB, slow reader cut "
                f"{row[kind]['slow_cut']}/{runs}",
                flush=True,
            )
        results["slow"] = row
        table.append(
            (
                "one slow reader among 100: others' deliveries/s",
                {k: row[k]["deliveries_per_s"] for k in kinds},
            )
        )
        table.append(
            (
                "one slow reader among 100: server RSS (MiB)",
                {k: row[k]["server_rss_kib"] / 1024 for k in kinds},
            )
        )

    if "abuse" in wanted:
        results["abuse"] = abuse(runs, "3" if args.quick else "5", args.floods)

    if "cluster" in wanted:
        results["cluster"] = cluster_bench(runs, 100, duration, "3" if args.quick else "5")

    if "conversations" in wanted:
        results["conversations"] = conversations_bench(runs, duration)

    if "catchup" in wanted:
        results["catchup"] = catchup_bench(runs, 3 if args.quick else 5)

    if "search" in wanted:
        from benchmarks.search import search_bench

        results["search"] = search_bench(runs, duration)

    if "files" in wanted:
        from benchmarks.files import files_bench

        results["files"] = files_bench(runs, duration)

    if table:
        print_table(table, runs)
    if "rooms" in results:
        print_rooms(results["rooms"])
    if "websocket" in results:
        print_websocket(results["websocket"], 100)
    if "irc" in results:
        print_irc(results["irc"], 100)
    if "passwords" in results:
        print_passwords(results["passwords"])
    if any(k in results for k in ("storm", "bigstorm", "crowd")):
        print_big_rooms(results)
    if "abuse" in results:
        print_abuse(results["abuse"])
    if "cluster" in results:
        print_cluster(results["cluster"], 100)
    if "conversations" in results:
        print_conversations(results["conversations"])
    if "catchup" in results:
        print_catchup(results["catchup"])
    if "search" in results:
        from benchmarks.search import print_search

        print_search(results["search"])
    if "files" in results:
        from benchmarks.files import print_files

        print_files(results["files"])
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {args.json}")
    if "fanout" in results:
        chart(results["fanout"], args.chart)
        print(f"wrote {args.chart}")
    return 0


BASELINES = ("ours", "naive", "line", "ngircd")


def print_table(table, runs: int) -> None:
    print(f"\nmedians of {runs} run(s); server on one core, generator on the other\n")
    header = (
        f"{'scenario':<58} {'ours':>12} {'naive':>12} {'line':>12} {'ngircd':>12} "
        f"{'÷naive':>8} {'÷line':>8} {'÷ngircd':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, values in table:
        ours = values.get("ours")
        cells = [f"{values[k]:>12,.2f}" if k in values else f"{'-':>12}" for k in BASELINES]
        ratios = [f"{ours / values[k]:>8.2f}" if values.get(k) else f"{'-':>8}" for k in BASELINES[1:]]
        print(f"{name:<58} {' '.join(cells)} {' '.join(ratios)}")


def print_big_rooms(results: dict) -> None:
    """docs/performance.md, "Big rooms and many connections"."""
    storms = [
        (count, label, r) for count, row in results.get("storm", {}).items() for label, r in row.items()
    ]
    if "bigstorm" in results:
        storms += [(results["bigstorm"]["connections"], "ours_v2", results["bigstorm"]["ours_v2"])]
    if storms:
        print(
            f"\n{'login storm into one room, 8 in flight':<40} {'logins/s':>9} {'settled s':>9} "
            f"{'missing':>8} {'room list B median / max':>25}  bound by"
        )
        for count, label, r in storms:
            sizes = (
                f"{r['room_bytes_median']:,.0f} / {r['room_bytes_max']:,.0f}"
                if "room_bytes_max" in r
                else "-"
            )
            missing = r["joined_missing"] + r["count_missing"]
            print(
                f"{f'{count:,} {label}':<40} {r['logins_per_s']:>9,.0f} {r['settled_seconds']:>9.1f} "
                f"{missing:>8} {sizes:>25}  {r['bound']}"
            )
    if "crowd" in results:
        r = results["crowd"]
        print(
            f"\n{r['connections']:,} idle connections ({r['processes']} generator processes): "
            f"{r['bytes_per_connection']:,.0f} B server RSS each, all in after {r['login_seconds']:.1f} s; "
            f"latency p50 / p99 {r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms against "
            f"{r['alone']['p50_ms']:.2f} / {r['alone']['p99_ms']:.2f} ms alone "
            f"({r['p50_ratio']:.2f}x / {r['p99_ratio']:.2f}x); beside as many plain connections, "
            f"not the server's: p99 {r['bare']['p99_ms']:.2f} ms ({r['bare_p99_ratio']:.2f}x alone; "
            f"the crowd {r['server_p99_ratio']:.2f}x that)"
        )


def print_passwords(row: dict) -> None:
    print(f"\n{'logins, 8 in flight (ours)':<40} {'logins/s':>10}")
    print(f"{'guest':<40} {row['guest_per_s']:>10,.1f}")
    print(f"{'with a password (scrypt N=2^15)':<40} {row['password_per_s']:>10,.1f}")
    print(f"{'guest ÷ password':<40} {row['ratio']:>10,.0f}")


def quiet_of(row: dict, flood: str) -> float | None:
    """The p99 of the quiet line a flood's bystanders compare with (their
    protocol version's), if it ran."""
    quiet = row.get("none-v2" if flood in CONVERSATION_FLOODS else "none")
    return quiet["p99_ms"] if quiet else None


def abuse_target(row: dict, flood: str) -> str:
    """The issue's target for a flood: bystanders' p99 within twice quiet,
    max under 50 ms; on the medians of every run, and of the calm runs
    (others took under CALM of the server's core) against calm quiet runs."""
    quiet_name = "none-v2" if flood in CONVERSATION_FLOODS else "none"
    quiet, r = row.get(quiet_name), row[flood]
    if quiet is None:
        return "no quiet line to compare with"

    def verdict(q: dict, f: dict, what: str) -> str:
        met = f["p99_ms"] <= 2 * q["p99_ms"] and f["max_ms"] < 50
        return (
            f"{what}: {'MET' if met else 'NOT MET'} "
            f"(p99 {f['p99_ms']:.2f} = {f['p99_ms'] / q['p99_ms']:.1f}x "
            f"quiet {q['p99_ms']:.2f} ms, max {f['max_ms']:.1f} ms)"
        )

    said = "target p99 <= 2x quiet, max < 50 ms; " + verdict(quiet, r, "all runs")
    if quiet.get("calm") and r.get("calm"):
        said += "; " + verdict(
            quiet["calm"], r["calm"], f"calm runs ({r['calm_runs']} and {quiet['calm_runs']})"
        )
    return said


def print_abuse(row: dict) -> None:
    print(
        f"\n{'bystanders (200 msg/s) while one client floods':<48} {'p50':>7} {'p99':>7} {'max':>8} "
        f"{'p99÷quiet':>10} {'answers/s':>10} {'RSS MB':>7} {'others':>7}  cut"
    )
    for flood, r in row.items():
        cut = next((c for c in r["cut"] if c), "")
        quiet = quiet_of(row, flood)
        ratio = f"{r['p99_ms'] / quiet:>10.1f}" if quiet else f"{'-':>10}"
        print(
            f"{flood:<48} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['max_ms']:>8.1f} "
            f"{ratio} {r['flood_answers_per_s']:>10,.0f} "
            f"{r['server_rss_kib'] / 1024:>7.0f} {r.get('others_on_server_core', 0):>7.0%}  {cut}"
        )
    for flood in CONVERSATION_FLOODS[1:]:
        if flood in row:
            print(f"  {flood} flood: {abuse_target(row, flood)}")


def chart(fanout: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(fanout, key=int)
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = {
        "ours": "chatproto",
        "naive": "naive Int32StringReceiver (json per recipient)",
        "line": "classic LineReceiver broadcast",
        "ngircd": "ngircd (C), IRC",
    }
    drawn = [
        (k, st)
        for k, st in (("ours", "o-"), ("line", "s--"), ("naive", "^:"), ("ngircd", "d-."))
        if k in fanout[sizes[0]]
    ]
    for kind, style in drawn:
        ax.plot(
            [int(s) for s in sizes],
            [fanout[s][kind]["deliveries_per_s"] / 1e6 for s in sizes],
            style,
            label=labels[kind],
        )
        for s in sizes:
            if fanout[s][kind]["bottleneck"] == "generator":
                ax.annotate(
                    "generator-bound",
                    (int(s), fanout[s][kind]["deliveries_per_s"] / 1e6),
                    textcoords="offset points",
                    xytext=(0, 8),
                    ha="center",
                    fontsize=7,
                )
    top = max(fanout[s][k]["deliveries_per_s"] for s in sizes for k, _ in drawn) / 1e6
    ax.set_ylim(0, top * 1.15)  # room for the labels
    ax.set_xscale("log")
    ax.set_xlabel("receivers (+ 4 senders), 100-byte messages")
    ax.set_ylabel("million deliveries / s (server on one core)")
    ax.set_title("Fan-out throughput")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
