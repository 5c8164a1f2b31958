"""The desktop client end to end: the real app on a real X server (Xvfb),
through a scripted session of a few minutes (tests/e2e/desktop_session.py).

Fails on any exception the app logs, on the app's process ending early or
badly, and on any step whose window, dialog or message never appears.
Screenshots of every step land in build/screenshots/desktop/; with
``CHAT_UPDATE_SCREENSHOTS=1`` the pictures of README.md and docs/using.md
are taken from them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHOTS = os.path.join(ROOT, "build", "screenshots", "desktop")
#: The steps README.md and docs/using.md show: each step's window, as docs/NAME.
README_SHOTS = {
    "conversation": "screenshot.png",
    "screenshot-pasted": "desktop-files.png",
    "search": "desktop-search.png",
}
#: The whole session may take this long; each step has its own, shorter bound.
SESSION_LIMIT = 420


@pytest.fixture(scope="module")
def display():
    """A fresh Xvfb on a display number it picks itself."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("skipped: no Xvfb (apt-get install xvfb)")
    read, write = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write), "-screen", "0", "1440x960x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    if not number:
        proc.kill()
        pytest.fail("Xvfb did not start")
    wm = window_manager(f":{number}")
    yield f":{number}"
    for process in (wm, proc):
        if process is not None:
            process.terminate()
            process.wait(10)


def window_manager(display: str):
    """Openbox, as a desktop has one: it gives focus back to the window
    under a closed dialog, as users expect. None where it isn't installed."""
    openbox = shutil.which("openbox")
    if openbox is None:
        return None
    env = dict(os.environ, DISPLAY=display)
    ready = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"openbox-ready-{os.getpid()}")
    proc = subprocess.Popen(
        [openbox, "--sm-disable", "--startup", f"touch {ready}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not os.path.exists(ready):  # its own "started" signal; bounded
        if time.monotonic() > deadline or proc.poll() is not None:
            pytest.fail("openbox did not start")
        time.sleep(0.05)
    os.unlink(ready)
    return proc


def run_session(display: str, work: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb", PYTHONUNBUFFERED="1")
    env.pop("WAYLAND_DISPLAY", None)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["XDG_CONFIG_HOME"] = os.path.join(work, "config")  # the app's settings: a fresh user's
    env["XDG_RUNTIME_DIR"] = os.path.join(work, "runtime")
    os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700, exist_ok=True)
    shutil.rmtree(SHOTS, ignore_errors=True)
    argv = [sys.executable, "-m", "tests.e2e.desktop_session", "--shots", SHOTS, "--work", work]
    # A group of its own: whatever it started (its chat server) goes with it, even if it dies.
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=SESSION_LIMIT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.mark.timeout(SESSION_LIMIT + 60)
def test_a_new_users_session_on_a_real_x_server(display, tmp_path):
    result = run_session(display, str(tmp_path))
    output = result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1:] or ["(nothing printed)"]
    assert result.returncode == 0, f"exit status {result.returncode}, {last[0]}\n{output[-6000:]}"
    assert last == ["E2E OK"], output[-6000:]
    assert "Traceback" not in output and "unexpected error" not in output, output[-6000:]
    shots = sorted(os.listdir(SHOTS))
    assert len(shots) >= 2 * 15, shots
    if os.environ.get("CHAT_UPDATE_SCREENSHOTS") == "1":
        for step, picture in README_SHOTS.items():
            chosen = next(name for name in shots if name.endswith(f"-{step}.window.png"))
            shutil.copyfile(os.path.join(SHOTS, chosen), os.path.join(ROOT, "docs", picture))
