#!/bin/sh
# The shared libraries Qt's xcb platform needs (a real X server: the desktop
# app, and its end-to-end test), as qtclient.platform_check lists them,
# installed where missing. Usage: sh scripts/qt_xcb_libraries.sh PYTHON
set -u
pairs=$("${1:-python3}" -c "from qtclient.platform_check import XCB_LIBRARIES as x; print(*(f'{s}:{p}' for s, p in x.items()))")
exec sh "$(dirname "$0")/system_packages.sh" $pairs
