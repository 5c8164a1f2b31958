"""The ``search`` scenario of ``make bench`` (docs/performance.md, "Search").

A history of a million messages is written straight into SQLite (one
transaction; a Zipf-like word distribution, as chat has), its index built
as a server's first start builds it for an older file (timed), and a real
server asked SEARCH for a common word, a rare word and a phrase over one
connection, one at a time (p50 and p99 of the round trip). Then what the
index costs an append: fan-out and latency with search on and with
``--no-search``, in the same run.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time

from chatproto import codec

#: Messages in the history searched.
MESSAGES = 1_000_000
#: Distinct words, their frequencies falling as 1/rank.
VOCABULARY = 30_000
#: The rare word, and how many messages hold it.
RARE, RARE_COUNT = "zyzzogeton", 25
#: Searches of each kind timed.
SEARCHES = 200


def words(rng: random.Random) -> list[str]:
    """A vocabulary of made-up words, most frequent first."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    seen: dict[str, None] = {}
    while len(seen) < VOCABULARY:
        seen["".join(rng.choices(letters, k=rng.randint(2, 9)))] = None
    return list(seen)


def fill(path: str, count: int = MESSAGES, seed: int = 7) -> tuple[str, str]:
    """``count`` messages in the default room of a new history file, without
    an index (a file as an older server left it); the common word and the
    phrase searched for."""
    from chatproto.backends.eventlog import Draft
    from chatproto.backends.sqlite import SPAN, SQLiteLog

    rng = random.Random(seed)
    vocabulary = words(rng)
    weights = list(itertools.accumulate(1 / rank for rank in range(1, VOCABULARY + 1)))
    log = SQLiteLog(path, search=False)
    log.append([Draft(0.0, "seed", "the first message")])
    base = log._ids["general"] * SPAN
    log.close()
    rare = set(rng.sample(range(2, count + 1), RARE_COUNT))
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    rows = []
    for seq in range(2, count + 1):
        text = " ".join(rng.choices(vocabulary, cum_weights=weights, k=rng.randint(3, 20)))
        if seq in rare:
            text += " " + RARE
        rows.append((base + seq, 1_700_000_000.0 + seq, f"user{seq % 500}", text))
        if len(rows) == 50_000:
            db.executemany("INSERT INTO messages (id, ts, sender, text) VALUES (?, ?, ?, ?)", rows)
            rows.clear()
    db.executemany("INSERT INTO messages (id, ts, sender, text) VALUES (?, ?, ?, ?)", rows)
    db.execute("COMMIT")
    db.close()
    return vocabulary[0], f'"{vocabulary[3]} {vocabulary[1]}"'


def build(path: str) -> float:
    """Seconds a server's first start spends indexing the file."""
    from chatproto.backends.sqlite import SQLiteLog

    started = time.monotonic()
    SQLiteLog(path).close()
    return time.monotonic() - started


class Client(asyncio.Protocol):
    """One version 2 session: packets in, one awaited answer at a time."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiting: asyncio.Future | None = None
        self.kinds: tuple[type, ...] = ()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        payloads, self.buffer = codec.split_frames(self.buffer + data)
        for payload in payloads:
            packet = codec.decode_server(payload)
            if self.waiting is not None and not self.waiting.done() and isinstance(packet, self.kinds):
                self.waiting.set_result(packet)

    async def ask(self, packet, *kinds: type):
        self.waiting = asyncio.get_running_loop().create_future()
        self.kinds = kinds
        self.transport.write(codec.frame(codec.encode(packet)))
        return await asyncio.wait_for(self.waiting, 120)


async def latencies(port: int, queries: dict[str, str]) -> dict[str, dict]:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(Client, "127.0.0.1", port)
    await client.ask(codec.Login("searcher", 2), codec.Welcome)
    await client.ask(codec.Join("general"), codec.RoomState)
    out = {}
    for name, words in queries.items():
        times, hits = [], 0
        for _ in range(SEARCHES):
            started = time.perf_counter()
            answer = await client.ask(codec.Search(words, limit=20), codec.Results, codec.Error)
            times.append(time.perf_counter() - started)
            assert isinstance(answer, codec.Results), answer
            hits = len(answer.hits)
        times.sort()
        out[name] = {
            "words": words,
            "hits": hits,
            "p50_ms": statistics.median(times) * 1000,
            "p99_ms": times[int(len(times) * 0.99) - 1] * 1000,
        }
    client.transport.close()
    return out


def append_cpu(search: bool, batch: int, count: int = 20_000) -> float:
    """CPU microseconds per message an append of ``batch`` messages costs the
    log (one transaction each), search on or off: what the index adds,
    measured in the process (CPU time: a busy machine changes it little)."""
    from chatproto.backends.eventlog import Draft
    from chatproto.backends.sqlite import SQLiteLog

    folder = tempfile.mkdtemp(prefix="chatsearch-append-")
    try:
        log = SQLiteLog(os.path.join(folder, "append.sqlite3"), search=search)
        rng = random.Random(3)
        vocabulary = words(rng)[:5000]
        texts = [" ".join(rng.choices(vocabulary, k=12)) for _ in range(1000)]
        started = time.process_time()
        for i in range(count // batch):
            log.append([Draft(float(i), "ann", texts[(i * batch + k) % 1000]) for k in range(batch)])
        spent = time.process_time() - started
        log.close()
        return spent / (count // batch * batch) * 1e6
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def search_bench(runs: int, duration: list[str]) -> dict:
    """The scenario: SEARCH latencies over a million messages, and what the
    index costs an append (search on ÷ --no-search, fan-out and latency)."""
    from benchmarks.run import server_argv
    from scripts.procstat import start_pinned

    row: dict = {"messages": MESSAGES, "runs": runs}
    folder = tempfile.mkdtemp(prefix="chatsearch-")
    try:
        path = os.path.join(folder, "search.sqlite3")
        started = time.monotonic()
        common, phrase = fill(path)
        row["fill_s"] = time.monotonic() - started
        row["build_s"] = build(path)
        row["file_mb"] = os.path.getsize(path) / 1e6
        print(
            f"  search: {MESSAGES:,} messages written in {row['fill_s']:.1f} s,"
            f" indexed in {row['build_s']:.1f} s"
        )
        measured = []
        for _ in range(runs):
            proc, port = start_pinned(server_argv("ours", path))
            try:
                queries = {"common word": common, "rare word": RARE, "phrase": phrase}
                measured.append(asyncio.run(latencies(port, queries)))
            finally:
                proc.terminate()
                proc.wait(10)
        for name in measured[0]:
            of = [m[name] for m in measured]
            r = row[name] = {
                key: statistics.median(x[key] for x in of) for key in ("p50_ms", "p99_ms", "hits")
            }
            r["words"] = of[0]["words"]
            print(f"  search {name:<12} {r['words']!r}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for batch in (1, 16):
        spent: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(runs):  # on and off interleaved: a busy moment hits both
            for search in spent:
                spent[search].append(append_cpu(search, batch))
        on, off = statistics.median(spent[True]), statistics.median(spent[False])
        row[f"append_us_{batch}"] = {"search on": on, "--no-search": off}
        print(
            f"  search append CPU, batches of {batch:>2}: {on:.1f} us a message with search,"
            f" {off:.1f} without"
        )
    row.update(append_cost(runs, duration))
    row["fanout_ratio"] = row["search on"]["deliveries_per_s"] / row["--no-search"]["deliveries_per_s"]
    return row


#: The two servers the append's cost is measured on.
SEARCH_OR_NOT = (("search on", ()), ("--no-search", ("--no-search",)))


def append_cost(runs: int, duration: list[str]) -> dict:
    """Fan-out to 10 and latency at 200 msg/s with search on and with
    --no-search, the two interleaved in each run, a fresh server each;
    medians, and which side each fan-out run was bound by."""
    from benchmarks.run import DEEP_SENDQ, bounds, generate, measure_fanout_cpu, server

    fanout: dict[str, list[dict]] = {label: [] for label, _ in SEARCH_OR_NOT}
    latency: dict[str, list[dict]] = {label: [] for label, _ in SEARCH_OR_NOT}
    for _ in range(runs):
        for label, extra in SEARCH_OR_NOT:
            fanout[label].append(measure_fanout_cpu("ours", 10, duration, (*DEEP_SENDQ, *extra)))
            with server("ours", extra) as (pid, port):
                args = ("--receivers", "100", "--rate", "200", "--duration", "5")
                latency[label].append(generate(port, "frames", "latency", *args, pid=pid))
    row: dict = {}
    for label, _ in SEARCH_OR_NOT:
        row[label] = {
            "deliveries_per_s": statistics.median(r["deliveries_per_s"] for r in fanout[label]),
            "server_cpu": statistics.median(r["server_cpu"] for r in fanout[label]),
            "bound": bounds(fanout[label]),
            "p50_ms": statistics.median(r["p50_ms"] for r in latency[label]),
            "p99_ms": statistics.median(r["p99_ms"] for r in latency[label]),
            "runs": fanout[label],
            "latency_runs": latency[label],
        }
        r = row[label]
        print(
            f"  search append cost, {label:<12} fan-out 10 receivers"
            f" {r['deliveries_per_s']:,.0f} deliveries/s"
            f" (server cpu {r['server_cpu']:.0%}, bound {r['bound']}),"
            f" latency at 200 msg/s p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms"
        )
    return row


def print_search(row: dict) -> None:
    print(
        f"\nsearch over {row['messages']:,} messages"
        f" (indexed in {row['build_s']:.0f} s, file {row['file_mb']:.0f} MB); medians of {row['runs']} run(s)"
    )
    for name in ("common word", "rare word", "phrase"):
        r = row[name]
        print(f"  {name:<12} {r['words']!r:<22} p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms")
    on, off = row["search on"], row["--no-search"]
    print(
        f"  appends: fan-out with search {on['deliveries_per_s']:,.0f}/s,"
        f" without {off['deliveries_per_s']:,.0f}/s "
        f"({row['fanout_ratio']:.2f}x; bound {on['bound']} and {off['bound']});"
        f" latency p99 {on['p99_ms']:.2f} ms vs {off['p99_ms']:.2f} ms"
    )
    for batch in (1, 16):
        a = row[f"append_us_{batch}"]
        print(
            f"  append CPU, batches of {batch}: {a['search on']:.1f} us a message with search,"
            f" {a['--no-search']:.1f} without"
        )
