#!/bin/sh
# Debian packages that tests and benchmarks drive from outside, given as
# COMMAND:PACKAGE (by default the tests': chromium and its driver, irssi,
# tmux), installed where they are missing and apt-get can be used; otherwise
# what needs them says "skipped" and why.
set -u
missing=""
tools="${*:-chromium:chromium chromedriver:chromium-driver irssi:irssi tmux:tmux}"
for tool in $tools; do
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
