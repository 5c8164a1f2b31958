"""Fuzzing in the test suite: crashes found so far, and a short fresh run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from fuzz.fuzz_server import SEEDS, exercise

HERE = os.path.dirname(os.path.abspath(__file__))
REGRESSIONS = os.path.join(os.path.dirname(HERE), "fuzz", "regressions")


#: What the saved inputs make the server do, together (python -m fuzz.minimize
#: keeps an input only when it shows something new).
SHOWN_BY_THE_CORPUS = {
    "Welcome",
    "MessagePacket",
    "Private",
    "Joined",
    "Pending",
    "PongReply",
    "ServerPing",
    "HistoryPage",
    "Left quit",
    "Left part",
    "RoomState",
    "RoomList",
    "TopicChanged",
    "Left connection_lost",
    "Bye login_timeout",
    "Bye timeout",
    *(
        f"Error {code}"
        for code in (
            "already_logged_in",
            "bad_nick",
            "bad_packet",
            "bad_text",
            "frame_too_large",
            "nick_taken",
            "no_such_nick",
            "not_logged_in",
            "unknown_type",
            "unsupported_version",
            "bad_room",
            "no_such_room",
            "not_a_member",
            "rate_limited",
        )
    ),
}


class FuzzRegressions(SynchronousTestCase):
    def test_every_saved_input_passes_and_together_they_reach_every_path(self):
        names = sorted(n for n in os.listdir(REGRESSIONS) if not n.startswith("."))
        self.assertGreaterEqual(len(names), 10, "the minimized corpus is there")
        shown: set[str] = set()
        replayed = 0
        for name in names:
            with open(os.path.join(REGRESSIONS, name), "rb") as f:
                shown |= exercise(f.read())
            replayed += 1
        self.assertEqual(replayed, len(names))
        self.assertEqual(SHOWN_BY_THE_CORPUS - shown, set(), "behaviours no saved input reaches any more")

    def test_a_session_of_valid_frames(self):
        # op: peer (op % 3), action 3 (a seed frame): ann and bob log in, chat, whisper, page, quit
        exercise(bytes([9, 0, 10, 1, 9, 2, 9, 3, 9, 4, 9, 5, 10, 2, 12, 200, 9, 7]))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(SEEDS)), max_size=12))
    def test_random_streams(self, chunks):
        data = bytearray()
        for chunk in chunks:
            data += bytes([len(data) % 3, len(chunk) - 1 if chunk else 0]) + chunk
        exercise(bytes(data))


class CoverageGuided(SynchronousTestCase):
    def test_atheris_short_run_finds_nothing(self):
        try:
            import atheris  # noqa: F401
        except ImportError:
            self.skipTest("atheris is not installed")
        artifacts = tempfile.mkdtemp(prefix="fuzz-")
        self.addCleanup(shutil.rmtree, artifacts, True)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "fuzz.fuzz_server",
                "-max_total_time=15",
                "-seed=1",
                f"-artifact_prefix={artifacts}/",
                "-print_final_stats=1",
            ],
            cwd=os.path.dirname(HERE),
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertIn("Done", result.stderr)
