"""``make redis``: the Redis (Valkey) a cluster of chat servers shares, in
the foreground, durable ("acked means on disk": an append-only file synced
on every write), its files in ``redis-data/``.

``make redis`` is one server on port 6379 (``ARGS=PORT`` for another);
``make redis ARGS=sentinel`` is a primary on 6379 with replicas on 6380
and 6381 and three Sentinels on 26379-26381 that know the primary as ``chat``, every
server refusing writes while no replica follows it
(``min-replicas-to-write 1``; two replicas, so that one left after a
failover still confirms), for ``--cluster
sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/chat
--cluster-min-replicas 1``. Ctrl-C stops them all. Run again, the
Sentinels' files (which they rewrite as they learn) are kept: they remember
a failover, and put a restarted old primary right as a replica.

``make redis ARGS=shards`` is a Redis Cluster: three primaries on
7000-7002, each with two replicas on 7003-7008 (gossip on 17000-17008),
formed the first time, as their ``nodes.conf`` files say after; for
``--cluster redis-cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002
--cluster-min-replicas 1``. Each node logs to ``redis-data/shards/PORT/log``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from scripts.spawn import redis_argv, redis_binary, sentinel_config, start_redis_cluster

NAME = "chat"
SAFETY = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"]


def single(port: int, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    argv = redis_argv(os.path.abspath(folder), port)
    os.execv(argv[0], argv)


def replicated(
    folder: str, primary: int = 6379, replicas: tuple = (6380, 6381), sentinels: tuple = (26379, 26380, 26381)
) -> None:
    """Every process in the foreground, its output on ours, until Ctrl-C."""
    folder = os.path.abspath(folder)
    argvs = []
    following = ["--replicaof", "127.0.0.1", str(primary)]
    for port, extra in ((primary, []), *((replica, following) for replica in replicas)):
        os.makedirs(os.path.join(folder, str(port)), exist_ok=True)
        argvs.append([*redis_argv(os.path.join(folder, str(port)), port), *SAFETY, *extra])
    for port in sentinels:
        config = os.path.join(folder, f"sentinel-{port}.conf")
        if not os.path.exists(config):  # a Sentinel's own record of what it learnt: kept
            sentinel_config(folder, port, NAME, primary)
        argvs.append([redis_binary(), config, "--sentinel"])
    processes = [subprocess.Popen(argv) for argv in argvs]
    hosts = ",".join(f"127.0.0.1:{port}" for port in sentinels)
    print(f"\n  --cluster sentinel://{hosts}/{NAME} --cluster-min-replicas 1\n", flush=True)
    _until_interrupted(processes)


def sharded(
    folder: str, primaries: tuple = (7000, 7001, 7002), replicas: tuple = tuple(range(7003, 7009))
) -> None:
    """Every node in the background until Ctrl-C, each logging to its folder."""
    processes = start_redis_cluster(os.path.abspath(folder), list(primaries), list(replicas), fsync="always")
    hosts = ",".join(f"127.0.0.1:{port}" for port in primaries)
    print(f"\n  --cluster redis-cluster://{hosts} --cluster-min-replicas 1\n", flush=True)
    _until_interrupted(processes)


def _until_interrupted(processes: list) -> None:
    try:
        for process in processes:
            process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait()


def main(args: list[str], folder: str = "redis-data") -> None:
    if args[:1] == ["sentinel"]:
        replicated(folder)
    elif args[:1] == ["shards"]:
        sharded(os.path.join(folder, "shards"))
    else:
        single(int(args[0]) if args else 6379, folder)


if __name__ == "__main__":
    main(sys.argv[1:])
