#!/bin/sh
# Debian packages the tests drive from outside (chromium and its driver,
# irssi, tmux), installed where they are missing and apt-get can be used;
# otherwise the tests that need them say "skipped" and why.
set -u
missing=""
for tool in chromium:chromium chromedriver:chromium-driver irssi:irssi tmux:tmux; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing="$missing ${tool#*:}"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null \
        || echo "could not install$missing: the tests that need them will be skipped"
else
    echo "missing$missing (not root, or no apt-get): the tests that need them will be skipped"
fi
exit 0
