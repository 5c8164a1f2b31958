"""Keep the inputs of a fuzzing corpus that show the server doing something new.

    python -m fuzz.minimize CORPUS [CORPUS ...]   (writes fuzz/regressions/)

Each input is replayed with :func:`fuzz.fuzz_server.exercise`; shortest
first, an input is kept when it shows a behaviour (a packet kind, an error
code, a BYE or LEFT reason) that no kept input showed. The test suite
replays what is kept, and checks that together they still show them all.
"""

from __future__ import annotations

import hashlib
import os
import sys

from fuzz.fuzz_server import exercise

REGRESSIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "regressions")


def main(folders: list[str]) -> int:
    inputs = []
    for folder in folders:
        for name in os.listdir(folder):
            with open(os.path.join(folder, name), "rb") as f:
                inputs.append(f.read())
    kept: dict[str, bytes] = {}
    covered: set[str] = set()
    for data in sorted(set(inputs), key=len):
        new = exercise(data) - covered
        if new:
            covered |= new
            kept[hashlib.sha1(data).hexdigest()[:16]] = data
    os.makedirs(REGRESSIONS, exist_ok=True)
    for name, data in kept.items():
        with open(os.path.join(REGRESSIONS, name), "wb") as f:
            f.write(data)
    print(f"kept {len(kept)} of {len(inputs)} inputs, showing {len(covered)} behaviours:")
    for item in sorted(covered):
        print(f"  {item}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
