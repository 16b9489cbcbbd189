#!/bin/sh
# Make sure Prometheus Alertmanager (`prometheus-alertmanager`, Debian's name) and `amtool`
# are available for tests/integration/test_alertmanager.py. Idempotent: prints the binary's
# path when present. Installs Debian's package otherwise (scripts/apt-install.sh: its own
# service is never used, the test starts its own Alertmanager on a free port).
set -eu
found=$(command -v prometheus-alertmanager || command -v alertmanager || true)
if [ -z "$found" ] || ! command -v amtool >/dev/null 2>&1; then
    sh "$(dirname "$0")/apt-install.sh" ensure-alertmanager prometheus-alertmanager
fi
command -v prometheus-alertmanager || command -v alertmanager
