"""Two checkouts' servers side by side: ``make bench``'s fan-out, latency and
login-storm scenarios, run in turn for each tree (interleaved, so the
machine's noise falls on both alike), then each figure's median per tree
and their ratio.

    python -m scripts.bench_compare BEFORE AFTER [--rounds 3] [--only fanout latency storm]
    python -m scripts.bench_compare BEFORE AFTER --only conversations catchup

(``conversations`` and ``catchup`` need a tree whose server speaks
docs/protocol.md section 19; an older tree's figures show as nan.)

Each tree needs its own ``.venv`` (``make install`` there). What a change
costs a message is the ratio: near 1.00 is within noise on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def run_tree(tree: str, only: list[str], out: str) -> dict:
    """One ``benchmarks.run`` of ``tree``'s server, one run of each scenario."""
    python = os.path.join(tree, ".venv", "bin", "python")
    chart = out.replace(".json", ".png")
    command = [python, "-m", "benchmarks.run", "--runs", "1", "--json", out, "--chart", chart]
    command += ["--only", *only]
    subprocess.run(command, cwd=tree, check=True, timeout=1800)
    with open(out) as f:
        return json.load(f)


def figures(result: dict) -> dict[str, float]:
    """Our server's figures of one run, by name."""
    found: dict[str, float] = {}
    for receivers, row in result.get("fanout", {}).items():
        ours = row["ours"]
        found[f"fan-out {receivers} receivers, deliveries/s"] = ours["deliveries_per_s"]
        # Bound by the load generator, the rate says little: what the server's core spent says more.
        if ours["server_cpu"]:
            found[f"fan-out {receivers}, deliveries per server CPU-s"] = (
                ours["deliveries_per_s"] / ours["server_cpu"]
            )
    latency = result.get("latency", {}).get("ours")
    if latency:
        for key in ("p50_ms", "p99_ms", "max_ms"):
            found[f"latency 100 receivers, {key}"] = latency[key]
    for count, row in result.get("storm", {}).items():
        if "ours" in row:
            found[f"login storm {count}, logins/s"] = row["ours"]["logins_per_s"]
    # Conversations (docs/protocol.md 19): server CPU per request, and each kind against SAY.
    conversations = result.get("conversations", {})
    for kind in ("say", "edit", "react", "typing"):
        if kind in conversations:
            found[f"{kind}, server us per request"] = conversations[kind]["us_per_request"]
            if kind != "say":
                found[f"{kind} ÷ SAY, server CPU per request"] = conversations[kind]["cost_vs_say"]
    catchup = result.get("catchup", {})
    for store, way, name in (
        ("plain", "after", "catch-up 10,000 plain"),
        ("changed", "after", "catch-up 10,000 changed"),
        ("changed", "changes", "catch-up changed_after"),
    ):
        if store in catchup:
            found[f"{name}, ms"] = catchup[store][way]["seconds"] * 1000
            found[f"{name}, server CPU ms"] = catchup[store][way]["server_cpu_s"] * 1000
    for flood, r in result.get("abuse", {}).items():
        found[f"abuse {flood}, bystanders' p99 ms"] = r["p99_ms"]
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=["fanout", "latency", "storm"])
    args = parser.parse_args()
    trees = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    seen: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for name, tree in trees.items():
                print(f"round {round_ + 1}/{args.rounds}: {name} ({tree})", flush=True)
                result = run_tree(tree, args.only, os.path.join(folder, f"{name}-{round_}.json"))
                for key, value in figures(result).items():
                    seen[name].setdefault(key, []).append(value)
    print(f"\nmedians of {args.rounds} interleaved runs")
    print(f"{'figure':<44} {'before':>12} {'after':>12} {'after/before':>13}")
    for key in dict.fromkeys([*seen["before"], *seen["after"]]):
        before = statistics.median(seen["before"].get(key, [float("nan")]))
        after = statistics.median(seen["after"].get(key, [float("nan")]))
        ratio = after / before if before else float("nan")
        print(f"{key:<44} {before:>12,.2f} {after:>12,.2f} {ratio:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
