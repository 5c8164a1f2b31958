#!/bin/sh
# Qt's xcb platform (a real X server: the desktop app, and its end-to-end
# test) needs shared libraries that minimal systems lack; the list is
# qtclient.platform_check's. Installed where missing and apt-get can be used,
# otherwise said. Usage: sh scripts/qt_xcb_libraries.sh PYTHON
set -u
missing=$("${1:-python3}" -c "from qtclient.platform_check import missing_xcb_packages as m; print(*m())")
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null \
        || echo "could not install $missing: Qt's xcb platform will not load"
else
    echo "missing $missing (not root, or no apt-get): Qt's xcb platform will not load"
fi
exit 0
