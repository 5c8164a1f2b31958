"""Emoji show as colour glyphs, not boxes: the browser page names a colour
emoji font, and the setup installs Debian's where it is missing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from scripts.spawn import ROOT

#: What scripts/system_packages.sh is given for Debian's colour emoji font.
EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf:fonts-noto-color-emoji"
SCRIPT = os.path.join(ROOT, "scripts", "system_packages.sh")


class Page(SynchronousTestCase):
    def test_the_font_stack_falls_back_to_noto_color_emoji(self):
        with open(os.path.join(ROOT, "chatproto", "webclient", "style.css"), encoding="utf-8") as f:
            css = f.read()
        stacks = re.findall(r"^\s*font:\s*([^;]+);", css, re.MULTILINE)
        (declaration,) = [stack for stack in stacks if "," in stack]  # the page's (the rest inherit)
        families = [family.strip().strip('"') for family in declaration.split(",")]
        self.assertIn("Noto Color Emoji", families)
        self.assertGreater(
            families.index("Noto Color Emoji"), families.index("sans-serif"), "after the text fonts"
        )


class Setup(SynchronousTestCase):
    def test_the_default_list_has_the_emoji_font(self):
        with open(SCRIPT, encoding="utf-8") as f:
            script = f.read()
        self.assertIn(f'EMOJI_FONT="{EMOJI_FONT}"', script)
        self.assertRegex(script, r'tools="\$\{\*:-[^}]*\$EMOJI_FONT\}"')

    def test_make_client_installs_the_font_before_starting(self):
        if shutil.which("make") is None:
            self.skipTest("no make")
        commands = subprocess.run(
            ["make", "-n", "--no-print-directory", "client", "ARGS="],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        font = next(i for i, c in enumerate(commands) if c == f"sh scripts/system_packages.sh {EMOJI_FONT}")
        client = next(i for i, c in enumerate(commands) if "chat-client" in c)
        self.assertLess(font, client)

    def test_a_file_is_checked_by_its_path_and_nothing_is_installed_without_root(self):
        bin = self.mktemp()
        os.makedirs(bin)
        with open(os.path.join(bin, "id"), "w") as f:
            f.write("#!/bin/sh\necho 1000\n")  # not root: nothing is installed
        os.chmod(os.path.join(bin, "id"), 0o755)
        present = os.path.abspath(self.mktemp())
        open(present, "w").close()  # a font file is no command
        done = subprocess.run(
            ["/bin/sh", SCRIPT, f"{present}:fonts-here", "/nowhere/Font.ttf:fonts-gone"],
            env={"PATH": bin},
            capture_output=True,
            text=True,
        )
        self.assertEqual(done.returncode, 0)
        self.assertEqual(
            done.stdout,
            "missing fonts-gone (not root, or no apt-get): what needs them is skipped or does without\n",
        )
