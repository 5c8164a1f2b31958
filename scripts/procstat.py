"""Read a server process's RSS, CPU time and open files; pin it to a core.

Shared by the benchmarks and the soak script (which start it with spawn.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess

from scripts.spawn import ROOT, many_files, server_argv, start_server

__all__ = [
    "ROOT",
    "cpu_seconds",
    "fd_count",
    "load_server_argv",
    "pinned",
    "rss_bytes",
    "start_pinned",
    "start_pinned_ports",
    "stop_server",
]

_CLK = os.sysconf("SC_CLK_TCK")


def pinned(core: int) -> list[str]:
    """A taskset prefix that runs a command on ``core``, where that can be done."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(core)]
    return []


def load_server_argv(history: str, *extra: str, port: int = 0) -> list[str]:
    """Our server as the benchmark and soak drivers run it: room for
    20,000 connections and a deep accept backlog."""
    return server_argv(
        "--history",
        history,
        "--max-clients",
        "20000",
        *extra,
        listen=f"tcp:{port}:interface=127.0.0.1:backlog=4096",
    )


def start_pinned(argv: list[str], core: int = 0, listeners: int = 1):
    """start_server on ``core``, allowed 20,000 file descriptors; (Popen,
    port): the port of the last of its ``listeners`` to come up (with
    ``--web`` after ``--listen``: the web port)."""
    proc, ports = start_pinned_ports(argv, listeners, core)
    return proc, ports[-1]


def start_pinned_ports(argv: list[str], listeners: int, core: int = 0):
    """start_pinned, with every listener's port, in the order they came up."""
    return start_server(argv, listeners, prefix=[*pinned(core), *many_files()])


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def stop_server(proc: subprocess.Popen, folder: str, wait: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``wait`` seconds; its folder removed."""
    proc.terminate()
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(folder, ignore_errors=True)
