#!/bin/sh
# Make sure a headless Chromium is available for the CS-board test
# (tests/integration/test_board.py). Idempotent: does nothing when one exists.
set -eu
for bin in chromium chromium-browser google-chrome; do
    if command -v "$bin" >/dev/null 2>&1; then
        command -v "$bin"
        exit 0
    fi
done
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-chromium: chromium is missing and installing it needs root (apt-get install -y chromium)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq chromium >/dev/null
command -v chromium
