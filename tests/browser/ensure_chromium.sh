#!/bin/sh
# Install the system Chromium the browser tests drive, if it is missing.
# Playwright's own browser download does not work everywhere; Debian's package does.
set -eu

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "Chromium is missing at $CHROMIUM; install it as root: apt-get install -y chromium" >&2
    exit 1
fi
echo "Installing Chromium with apt-get…"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
test -x "$CHROMIUM"
"$CHROMIUM" --version
