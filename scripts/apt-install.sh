#!/bin/sh
# Install one Debian package for a test helper, never starting its service:
#   sh scripts/apt-install.sh WHO PACKAGE
# WHO names the calling script in the one-line error when this is not root. The tests start
# their own servers on free ports and must never depend on (or collide with) a system one.
set -eu
who=$1
package=$2
if [ "$(id -u)" -ne 0 ]; then
    echo "$who: $package is missing and installing it needs root (apt-get install -y $package)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Without an init system the package's postinst cannot start the service;
# policy-rc.d makes that explicit on machines that have one.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT  # also when the install fails
fi
# Other installers may hold the dpkg lock (several helpers share this machine): wait for it.
apt-get -o DPkg::Lock::Timeout=900 update -qq >/dev/null
apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "$package" >/dev/null
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now "$package" >/dev/null 2>&1 || true
fi
