#!/bin/sh
# Make sure `prometheus` and `promtool` are available for the ops tests
# (tests/ops/). Idempotent: does nothing when both exist. Installs Debian's
# `prometheus` package otherwise; the package's own service is stopped and
# disabled because the tests start their own Prometheus on a free port and
# must never depend on (or collide with) a system one on :9090.
set -eu
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    command -v promtool
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-prometheus: prometheus/promtool are missing and installing them needs root (apt-get install -y prometheus)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Without an init system the package's postinst cannot start the service;
# policy-rc.d makes that explicit on machines that have one.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
# Other installers may hold the dpkg lock (several helpers share this machine): wait for it.
apt-get -o DPkg::Lock::Timeout=900 update -qq >/dev/null
apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends prometheus >/dev/null
if [ "$created_policy" -eq 1 ]; then
    rm -f "$policy"
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
command -v promtool
