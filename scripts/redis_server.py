"""``make redis``: a Valkey for a cluster of chat servers to share, in the
foreground, durable ("acked means on disk": an append-only file synced on
every write), its files in ``redis-data/``. Port 6379 unless given."""

from __future__ import annotations

import os
import sys

from scripts.spawn import redis_argv


def main(port: int = 6379, folder: str = "redis-data") -> None:
    os.makedirs(folder, exist_ok=True)
    argv = redis_argv(os.path.abspath(folder), port)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6379)
