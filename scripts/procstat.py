"""Run a chat server subprocess and read its RSS, CPU time and open files.

Shared by the benchmarks and the soak and kill scripts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PORT = re.compile(rb"(?:listening on (\d+)|\(127\.0\.0\.1:(\d+)\))")
_CLK = os.sysconf("SC_CLK_TCK")


def pinned(core: int) -> list[str]:
    """A taskset prefix that runs a command on ``core``, where that can be done."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(core)]
    return []


def our_server_argv(history: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "twisted",
        "--log-format=text",
        "chat",
        "--listen",
        "tcp:0:interface=127.0.0.1:backlog=4096",
        "--history",
        history,
        "--max-clients",
        "20000",
        *extra,
    ]


def start_server(history: str | None = None, argv: list[str] | None = None, core: int = 0):
    """Start a server (ours unless ``argv``) with 20,000 file descriptors allowed,
    pinned to ``core``; returns (Popen, port) once it listens."""
    if argv is None:
        if history is None:
            import tempfile

            history = os.path.join(tempfile.mkdtemp(prefix="chat-"), "history.sqlite3")
        argv = our_server_argv(history)
    limit = ["prlimit", "--nofile=20000:20000"] if shutil.which("prlimit") else []
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [*pinned(core), *limit, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server exited: {output.decode(errors='replace')}")
        output += line
        match = _PORT.search(line)
        if match:
            # Keep reading its output so a chatty log never blocks it.
            subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
            return proc, int(match.group(1) or match.group(2))
    proc.kill()
    raise RuntimeError("server did not start listening")


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
