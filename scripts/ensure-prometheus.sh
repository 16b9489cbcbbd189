#!/bin/sh
# Make sure `prometheus` and `promtool` are available for the ops tests
# (tests/ops/). Idempotent: does nothing when both exist. Installs Debian's
# `prometheus` package otherwise (scripts/apt-install.sh: its own service is
# never started, the tests run their own Prometheus on a free port).
set -eu
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    sh "$(dirname "$0")/apt-install.sh" ensure-prometheus prometheus
fi
command -v promtool
