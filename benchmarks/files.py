"""The ``files`` scenario of ``make bench`` (docs/performance.md, "Files").

Uploads and downloads of a 10 MiB and a 64 KiB file over HTTP, through our
``--web`` site's ``/files`` (every upload with a real FILES token) and
through a baseline of the least twisted.web needs
(benchmarks/baselines/file_server.py: the body streamed to a file,
``static.File`` for downloads), the two servers interleaved in each run,
each alone on core 0 and the generator (benchmarks/fileload.py) on core 1.
Then thumbnails of a 3000x2000 JPEG made at bench time, through
``chatproto.thumbnails.picture`` and through Pillow's bare
``Image.thumbnail``, in this process on core 0. Last, what files cost a
message without any: fan-out with files on and with ``--files off``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time

from scripts.procstat import pinned, start_pinned, start_pinned_ports, stop_server

#: (label, direction, bytes of the file), in the order each server runs them.
TRANSFERS = [
    ("upload 10 MiB", "upload", 10 * 1024 * 1024),
    ("upload 64 KiB", "upload", 64 * 1024),
    ("download 10 MiB", "download", 10 * 1024 * 1024),
    ("download 64 KiB", "download", 64 * 1024),
]
#: Requests in flight, one per keep-alive connection, for both servers.
IN_FLIGHT = 4
#: Our server's limits that would stop a throughput run, lifted as the
#: chat rate is for fan-out: every upload is one session's, kept, and four
#: are under way at once.
OURS_FILES = (
    "--account-quota",
    str(1 << 50),
    "--files-quota",
    str(1 << 50),
    "--uploads-at-once",
    str(IN_FLIGHT),
)
#: The photo thumbnailed, as a phone takes it.
PHOTO = (3000, 2000)
#: Each side's thumbnails in a run: for this long, at most this many.
THUMB_SECONDS, THUMB_MOST = 3.0, 200


@contextlib.contextmanager
def file_server(kind: str):
    """Ours (with --web) or the baseline, fresh, in a folder of its own;
    yields (pid, web port, generator arguments)."""
    from benchmarks.run import PY, server_argv

    folder = tempfile.mkdtemp(prefix="chatfiles-")
    if kind == "ours":
        web = ("--web", "tcp:0:interface=127.0.0.1", *OURS_FILES)
        proc, (chat_port, port) = start_pinned_ports(server_argv("ours", f"{folder}/bench.sqlite3", web), 2)
        extra = ["--chat-port", str(chat_port)]
    else:
        proc, port = start_pinned([PY, "-m", "benchmarks.baselines.file_server", "0", folder])
        extra = ["--download-path", "/static/{id}"]
    try:
        yield proc.pid, port, extra
    finally:
        stop_server(proc, folder)
        os.sync()  # what one server wrote is not flushed while the next is measured


def transfers(kind: str, duration: list[str]) -> dict[str, dict]:
    """Every transfer of TRANSFERS against one fresh server of ``kind``."""
    from benchmarks.run import generate

    out = {}
    with file_server(kind) as (pid, port, extra):
        for label, direction, size in TRANSFERS:
            args = ("--size", str(size), "--in-flight", str(IN_FLIGHT), "--server-pid", str(pid))
            out[label] = generate(
                port, "http", direction, *args, *extra, *duration, pid=pid, module="benchmarks.fileload"
            )
    return out


def photo(path: str) -> int:
    """A 3000x2000 JPEG with a photo's detail (gradients, shapes, sensor
    noise) and an EXIF orientation, as a camera writes; its size in bytes."""
    from PIL import Image, ImageDraw, ImageFilter

    width, height = PHOTO
    sky = Image.linear_gradient("L").resize(PHOTO)
    glow = Image.radial_gradient("L").resize(PHOTO)
    grain = Image.effect_noise(PHOTO, 48)
    image = Image.merge("RGB", (glow, sky, grain))
    draw = ImageDraw.Draw(image)
    for n in range(40):
        left, top = (n * 173) % width, (n * 97) % height
        draw.ellipse([left, top, left + 240, top + 160], fill=((n * 50) % 256, (n * 90) % 256, 140))
    image = image.filter(ImageFilter.GaussianBlur(1))
    image = Image.blend(image, Image.merge("RGB", (grain, grain, grain)), 0.12)
    exif = Image.Exif()
    exif[0x0112] = 1  # orientation: upright
    image.save(path, "JPEG", quality=90, exif=exif.tobytes())
    return os.path.getsize(path)


def ours_thumbnail(path: str, out: str) -> None:
    from chatproto import thumbnails
    from chatproto.limits import Limits

    made = thumbnails.picture(path, "image/jpeg", Limits().max_image_pixels, out)
    assert made is not None and made.thumb is not None, "no thumbnail made"


def bare_thumbnail(path: str, out: str) -> None:
    from PIL import Image

    with Image.open(path) as image:
        image.thumbnail((320, 320))
        image.save(out, "JPEG", quality=85)


def thumbnails_per_s(make, path: str, out: str) -> dict:
    """``make`` over and over for THUMB_SECONDS (THUMB_MOST at most): per
    second of wall time and of this process's CPU time."""
    count, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while count < THUMB_MOST and time.perf_counter() - wall0 < THUMB_SECONDS:
        make(path, out)
        count += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"thumbnails": count, "per_s": count / wall, "per_cpu_s": count / cpu}


def thumbnail_bench(runs: int) -> dict:
    """Ours and the bare loop, interleaved in each run, on core 0."""
    folder = tempfile.mkdtemp(prefix="chatthumbs-")
    affinity = os.sched_getaffinity(0)
    measured: dict[str, list[dict]] = {"ours": [], "baseline": []}
    try:
        path = os.path.join(folder, "photo.jpg")
        size = photo(path)
        if pinned(0):
            os.sched_setaffinity(0, {0})
        for _ in range(runs):
            for kind, make in (("ours", ours_thumbnail), ("baseline", bare_thumbnail)):
                measured[kind].append(thumbnails_per_s(make, path, os.path.join(folder, "thumb.jpg")))
    finally:
        os.sched_setaffinity(0, affinity)
        shutil.rmtree(folder, ignore_errors=True)
    row: dict = {"photo": f"{PHOTO[0]}x{PHOTO[1]} JPEG", "photo_bytes": size}
    for kind, of in measured.items():
        row[kind] = {key: statistics.median(r[key] for r in of) for key in ("per_s", "per_cpu_s")}
        row[kind]["runs"] = of
    row["ratio"] = row["ours"]["per_cpu_s"] / row["baseline"]["per_cpu_s"]
    print(
        f"  files thumbnails of a {row['photo']} ({size / 1e6:.1f} MB): "
        f"ours {row['ours']['per_s']:.1f}/s ({row['ours']['per_cpu_s']:.1f} per CPU-second), "
        f"bare Image.thumbnail {row['baseline']['per_s']:.1f}/s ({row['baseline']['per_cpu_s']:.1f}): "
        f"ours ÷ bare {row['ratio']:.2f}",
        flush=True,
    )
    return row


def files_bench(runs: int, duration: list[str]) -> dict:
    """The scenario: each transfer's medians for ours and the baseline,
    our ratio to it, which side each run was bound by; then thumbnails,
    and what files cost a message that has none."""
    from benchmarks.run import shared_bottleneck

    measured: dict[str, dict[str, list[dict]]] = {
        kind: {label: [] for label, *_ in TRANSFERS} for kind in ("ours", "baseline")
    }
    for _ in range(runs):
        for kind in measured:
            for label, result in transfers(kind, duration).items():
                measured[kind][label].append(result)
    row: dict = {"in_flight": IN_FLIGHT}
    for label, *_ in TRANSFERS:
        row[label] = {}
        for kind in measured:
            of = measured[kind][label]
            r = row[label][kind] = {
                key: statistics.median(x[key] for x in of)
                for key in ("per_s", "mib_per_s", "server_cpu", "generator_cpu")
            }
            r["bound"] = "/".join(shared_bottleneck(x) for x in of)
            r["runs"] = of
        ours, base = row[label]["ours"], row[label]["baseline"]
        row[label]["ratio"] = ours["mib_per_s"] / base["mib_per_s"]
        print(
            f"  files {label:<16} ours {ours['mib_per_s']:8.1f} MiB/s {ours['per_s']:8.1f}/s "
            f"(server cpu {ours['server_cpu']:.0%}, bound {ours['bound']})  baseline "
            f"{base['mib_per_s']:8.1f} MiB/s {base['per_s']:8.1f}/s (server cpu {base['server_cpu']:.0%}, "
            f"bound {base['bound']})  ours ÷ baseline {row[label]['ratio']:.2f}",
            flush=True,
        )
    row["thumbnails"] = thumbnail_bench(runs)
    row["plain messages"] = plain_message_cost(runs, duration)
    return row


#: The servers a plain message's cost is compared on: the page and its
#: /files on, and the page with --files off.
FILES_OR_NOT = (
    ("files on", ("--web", "tcp:0:interface=127.0.0.1")),
    ("--files off", ("--web", "tcp:0:interface=127.0.0.1", "--files", "off")),
)


def plain_message_cost(runs: int, duration: list[str]) -> dict:
    """Fan-out to 10 receivers (messages without files) with files on and
    with --files off, interleaved, a fresh server each."""
    from benchmarks.run import DEEP_SENDQ, bounds, measure_fanout_cpu

    measured: dict[str, list[dict]] = {label: [] for label, _ in FILES_OR_NOT}
    for _ in range(runs):
        for label, extra in FILES_OR_NOT:
            measured[label].append(measure_fanout_cpu("ours", 10, duration, (*DEEP_SENDQ, *extra)))
    row: dict = {}
    for label, of in measured.items():
        row[label] = {
            "deliveries_per_s": statistics.median(r["deliveries_per_s"] for r in of),
            "server_cpu": statistics.median(r["server_cpu"] for r in of),
            "bound": bounds(of),
            "runs": of,
        }
    row["ratio"] = row["files on"]["deliveries_per_s"] / row["--files off"]["deliveries_per_s"]
    on, off = row["files on"], row["--files off"]
    print(
        f"  files plain messages, fan-out 10 receivers: files on {on['deliveries_per_s']:,.0f}/s "
        f"(bound {on['bound']}), --files off {off['deliveries_per_s']:,.0f}/s (bound {off['bound']}): "
        f"on ÷ off {row['ratio']:.2f}",
        flush=True,
    )
    return row


def print_files(row: dict) -> None:
    title = f"files over HTTP, {row['in_flight']} in flight"
    print(
        f"\n{title:<24} {'ours MiB/s':>11} {'/s':>8} {'bound by':>24} "
        f"{'baseline MiB/s':>15} {'/s':>8} {'bound by':>24} {'÷baseline':>10}"
    )
    for label, *_ in TRANSFERS:
        ours, base = row[label]["ours"], row[label]["baseline"]
        print(
            f"{label:<24} {ours['mib_per_s']:>11.1f} {ours['per_s']:>8.1f} {ours['bound']:>24} "
            f"{base['mib_per_s']:>15.1f} {base['per_s']:>8.1f} {base['bound']:>24} "
            f"{row[label]['ratio']:>10.2f}"
        )
    t = row["thumbnails"]
    print(
        f"{'thumbnails of a ' + t['photo']:<24} ours {t['ours']['per_cpu_s']:.1f} per CPU-second, "
        f"bare Image.thumbnail {t['baseline']['per_cpu_s']:.1f}: ours ÷ bare {t['ratio']:.2f}"
    )
    plain = row["plain messages"]
    on, off = plain["files on"], plain["--files off"]
    print(
        f"{'messages without files':<24} fan-out to 10: files on ÷ --files off {plain['ratio']:.2f} "
        f"({on['deliveries_per_s']:,.0f} and {off['deliveries_per_s']:,.0f}/s)"
    )
