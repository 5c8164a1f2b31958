#!/bin/sh
# Debian packages that the tests, the benchmarks and the desktop client use
# from outside, given as CHECK:PACKAGE, where CHECK is a command or, for
# what is no command, the absolute path of a file the package installs (a
# font) or a shared library's soname (libxcb-cursor.so.0). By default the tests': chromium and its driver, irssi, WeeChat, tmux,
# and a colour emoji font, without which emoji show as boxes. Installed
# where missing and apt-get can be used; otherwise what needs them says
# "skipped" (or does without) and why.
set -u
EMOJI_FONT="/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf:fonts-noto-color-emoji"
missing=""
tools="${*:-chromium:chromium chromedriver:chromium-driver irssi:irssi weechat:weechat-curses tmux:tmux $EMOJI_FONT}"
present() {
    case "$1" in
        /*) [ -e "$1" ] ;;
        *.so.*) ldconfig -p | grep -q "$1" ;;
        *) command -v "$1" >/dev/null 2>&1 ;;
    esac
}
for tool in $tools; do
    present "${tool%%:*}" || missing="$missing ${tool#*:}"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null \
        || echo "could not install$missing: what needs them is skipped or does without"
else
    echo "missing$missing (not root, or no apt-get): what needs them is skipped or does without"
fi
exit 0
