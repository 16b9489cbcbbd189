#!/bin/sh
# Make sure Prometheus Alertmanager (`prometheus-alertmanager`, Debian's name) and `amtool`
# are available for tests/integration/test_alertmanager.py. Idempotent: prints the binary's
# path when present. Installs Debian's package otherwise; its own service is never used (the
# test starts its own Alertmanager on a free port).
set -eu
found=$(command -v prometheus-alertmanager || command -v alertmanager || true)
if [ -n "$found" ] && command -v amtool >/dev/null 2>&1; then
    echo "$found"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-alertmanager: alertmanager/amtool are missing and installing them needs root (apt-get install -y prometheus-alertmanager)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
apt-get -o DPkg::Lock::Timeout=900 update -qq >/dev/null
apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null
if [ "$created_policy" -eq 1 ]; then
    rm -f "$policy"
fi
command -v prometheus-alertmanager || command -v alertmanager
