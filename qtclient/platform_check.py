"""Before Qt starts: name the system packages its platform plugin lacks.

On a minimal Debian or Ubuntu desktop, Qt's xcb plugin can't load and Qt
says only "no Qt platform plugin could be initialized". This checks the
libraries that plugin links and says which packages to install. No Qt here.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable

#: The shared libraries Qt's xcb plugin links that minimal installs miss,
#: and the Debian/Ubuntu package of each.
XCB_LIBRARIES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
}


def _loads(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def missing_xcb_packages(loads: Callable[[str], bool] = _loads) -> list[str]:
    """The packages whose libraries can't be loaded, in a stable order."""
    return [package for soname, package in XCB_LIBRARIES.items() if not loads(soname)]


def uses_xcb(environ: dict) -> bool:
    """Whether Qt will try the xcb plugin: asked for, or an X session
    without Wayland on Linux."""
    platform = environ.get("QT_QPA_PLATFORM", "")
    if platform:
        return platform.split(":")[0] == "xcb" or platform.startswith("xcb;") or ";xcb" in platform
    return sys.platform.startswith("linux") and not environ.get("WAYLAND_DISPLAY")


def startup_problem(environ: dict | None = None, loads: Callable[[str], bool] = _loads) -> str | None:
    """A message for the user if the client can't start its window, else None."""
    environ = os.environ if environ is None else environ
    if not uses_xcb(environ):
        return None
    missing = missing_xcb_packages(loads)
    if not missing:
        return None
    return (
        "chat-client can't open a window: Qt's X11 (xcb) support needs system libraries "
        f"that are missing here.\nInstall them with:\n\n    sudo apt-get install {' '.join(missing)}\n\n"
        "(or run under Wayland, or with QT_QPA_PLATFORM=offscreen for no window at all)."
    )
