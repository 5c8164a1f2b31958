"""The files scenario's load generator: HTTP uploads and downloads over
keep-alive connections, a few in flight, loopback only.

    python -m benchmarks.fileload upload|download --port WEB --mode http --size BYTES [options]

Our server is given ``--chat-port``: the generator logs in there (version
2), joins the default room and asks FILES for a real token, which every
upload carries, as a client's would. A baseline needs none. A download
first uploads the file it then fetches again and again (checking the first
copy's bytes). Every upload's body differs in its first 16 bytes, so a
content-addressed store keeps each one. Prints one JSON object: completed
transfers a second and MiB a second within the measured window, with the
generator's, the server's and each core's CPU over it. Every loop here is
bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from benchmarks.loadgen import core_busy, core_times, server_cpu_seconds
from chatproto import codec

HOST = "127.0.0.1"
#: The longest one request may take before the run is called failed.
REQUEST_TIMEOUT = 120.0
MIB = 1024 * 1024


class HttpClient(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time; answers
    must carry a Content-Length (ours and twisted.web's file answers do)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.status = 0
        self.left = -1  # body bytes still to come; -1 while reading the head
        self.body: list[bytes] | None = None
        self.answered: asyncio.Future | None = None
        self.size = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self.answered is not None and not self.answered.done():
            self.answered.set_exception(ConnectionError(f"connection closed: {exc}"))

    async def request(self, parts: list[bytes], keep: bool = False) -> tuple[int, bytes, int]:
        """Send ``parts`` (head and body); (status, body if ``keep``, body length)."""
        self.answered = asyncio.get_running_loop().create_future()
        self.head, self.status, self.left = b"", 0, -1
        self.body = [] if keep else None
        self.size = 0
        for part in parts:
            self.transport.write(part)
        return await asyncio.wait_for(self.answered, REQUEST_TIMEOUT)

    def data_received(self, data: bytes) -> None:
        if self.left < 0:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self._parse_head(self.head[:end])
            data = self.head[end + 4 :]
        taken = data if len(data) <= self.left else data[: self.left]
        self.left -= len(taken)
        self.size += len(taken)
        if self.body is not None:
            self.body.append(taken)
        if self.left == 0 and not self.answered.done():
            self.answered.set_result((self.status, b"".join(self.body or ()), self.size))

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split()[1])
        fields = dict(line.split(b":", 1) for line in lines[1:] if b":" in line)
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        if b"content-length" not in fields:
            raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")
        self.left = int(fields[b"content-length"])


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


async def upload_token(port: int) -> tuple[str, asyncio.StreamWriter]:
    """A FILES_TOKEN of a version 2 session in the default room, and that
    session's connection, to be kept open: its token ends with it."""
    reader, writer = await asyncio.open_connection(HOST, port)

    async def answer(packet, kind: type):
        writer.write(codec.frame(codec.encode(packet)))
        buffer = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            buffer += await asyncio.wait_for(reader.read(65536), 30)
            payloads, buffer = codec.split_frames(buffer)
            for payload in payloads:
                got = codec.decode_server(payload)
                if isinstance(got, kind):
                    return got
                if isinstance(got, codec.Error):
                    raise RuntimeError(f"{packet!r}: {got!r}")
        raise RuntimeError(f"no answer to {packet!r}")

    await answer(codec.Login("filebench", 2), codec.Welcome)
    await answer(codec.Join("general"), codec.RoomState)
    token = await answer(codec.Files(), codec.FilesToken)
    return token.token, writer


class Uploader:
    """POSTs of ``size`` bytes, each with its own first 16 bytes."""

    def __init__(self, size: int, token: str | None, path: str) -> None:
        self.body = os.urandom(size)
        self.rest = self.body[16:]
        self.path = path
        self.headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.count = 0

    def parts(self) -> list[bytes]:
        self.count += 1
        return [request_head("POST", self.path, self.headers), b"%016d" % self.count, self.rest]

    async def one(self, client: HttpClient) -> str:
        status, body, _ = await client.request(self.parts(), keep=True)
        if status != 201:
            raise RuntimeError(f"upload answered {status}: {body[:200]!r}")
        return json.loads(body)["id"]


async def measured(args, clients: list[HttpClient], work) -> dict:
    """``work(client)`` over and over on each client; what completed within
    the window (after ``--warmup``, for ``--duration``)."""
    done: list[float] = []
    stop = asyncio.Event()
    deadline = time.monotonic() + args.warmup + args.duration + REQUEST_TIMEOUT

    async def loop(client: HttpClient) -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            await work(client)
            done.append(time.monotonic())

    tasks = [asyncio.create_task(loop(c)) for c in clients]
    await asyncio.sleep(args.warmup)
    t0, cpu0, server0, cores0 = (
        time.monotonic(),
        time.process_time(),
        server_cpu_seconds(args.server_pid),
        core_times(),
    )
    await asyncio.sleep(args.duration)
    t1, cpu1, server1, cores1 = (
        time.monotonic(),
        time.process_time(),
        server_cpu_seconds(args.server_pid),
        core_times(),
    )
    stop.set()
    await asyncio.gather(*tasks)
    count = sum(1 for t in done if t0 <= t < t1)
    wall = t1 - t0
    return {
        "size": args.size,
        "in_flight": len(clients),
        "transfers": count,
        "per_s": count / wall,
        "mib_per_s": count * args.size / MIB / wall,
        "generator_cpu": (cpu1 - cpu0) / wall,
        "server_cpu": (server1 - server0) / wall,
        "cores_busy": core_busy(cores0, cores1),
    }


async def connect(port: int, count: int) -> list[HttpClient]:
    loop = asyncio.get_running_loop()
    return [(await loop.create_connection(HttpClient, HOST, port))[1] for _ in range(count)]


async def uploader_of(args) -> tuple[Uploader, asyncio.StreamWriter | None]:
    """The scenario's uploads, with a token where the server wants one (and
    the chat connection that keeps it valid)."""
    if not args.chat_port:
        return Uploader(args.size, None, args.upload_path), None
    token, session = await upload_token(args.chat_port)
    return Uploader(args.size, token, args.upload_path), session


async def upload(args) -> dict:
    uploader, _session = await uploader_of(args)
    clients = await connect(args.port, args.in_flight)
    return await measured(args, clients, uploader.one)


async def download(args) -> dict:
    uploader, _session = await uploader_of(args)
    clients = await connect(args.port, args.in_flight)
    first = b"".join(uploader.parts()[1:])
    uploader.count = 0
    id = await uploader.one(clients[0])
    get = [request_head("GET", args.download_path.format(id=id), {})]
    status, body, _ = await clients[0].request(get, keep=True)
    if status != 200 or body != first:
        raise RuntimeError(f"download answered {status} with {len(body)} bytes, not the upload's")

    async def one(client: HttpClient) -> None:
        status, _, size = await client.request(get)
        if status != 200 or size != args.size:
            raise RuntimeError(f"download answered {status} with {size} bytes")

    return await measured(args, clients, one)


SCENARIOS = {"upload": upload, "download": download}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--port", type=int, required=True, help="the web site's port")
    parser.add_argument("--mode", choices=["http"], default="http")
    parser.add_argument("--chat-port", type=int, default=0, help="ours: where to ask FILES for a token")
    parser.add_argument("--size", type=int, required=True, help="bytes of each file")
    parser.add_argument("--in-flight", type=int, default=4, help="connections, one request in flight each")
    parser.add_argument("--upload-path", default="/files?room=general&name=bench.bin")
    parser.add_argument("--download-path", default="/files/{id}/bench.bin", help="{id}: the upload's id")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--server-pid", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(SCENARIOS[args.scenario](args))), flush=True)


if __name__ == "__main__":
    main()
