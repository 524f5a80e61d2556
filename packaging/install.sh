#!/bin/sh
# Install the PulseUp agent on a host without the .deb (run as root from a
# checkout of this repository). It creates the same users, directories and
# modes as the package (host-setup.sh is shared with the postinst), a venv
# in /usr/lib/pulseup-agent made with Debian's /usr/bin/python3, the
# /usr/bin/pulseup-agent wrapper, the config, the logrotate file, and the two
# units in /etc/systemd/system. Then, as the first step after installing:
#
#     pulseup-agent enroll --join-token-file /path/to/token
#     systemctl enable --now pulseup-supervisor pulseup-worker
#
# Environment: PYTHON (default /usr/bin/python3), PIP_ARGS (extra pip args).
# Remove with /usr/lib/pulseup-agent/uninstall (keeps config and data).
set -eu
umask 022

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")
PY=${PYTHON:-/usr/bin/python3}
APP=/usr/lib/pulseup-agent
UNIT_DIR=/etc/systemd/system

die() { echo "install.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root"
[ -x "$PY" ] || die "$PY not found (install python3 and python3-venv)"
if command -v dpkg-query >/dev/null 2>&1 \
	&& dpkg-query -W -f='${db:Status-Abbrev}' pulseup-agent 2>/dev/null | grep -q '^ii'; then
	die "the pulseup-agent package is installed; upgrade it with dpkg/apt instead"
fi

. "$HERE/host-setup.sh"

echo "install.sh: accounts and directories"
pulseup_create_accounts
pulseup_create_dirs

echo "install.sh: virtualenv in $APP"
rm -rf "$APP"
"$PY" -m venv "$APP"
# shellcheck disable=SC2086
"$APP/bin/pip" install --quiet --disable-pip-version-check --use-pep517 ${PIP_ARGS:-} "$SRC"
printf '#!/bin/sh\nexec %s/bin/python3 -I -m agent "$@"\n' "$APP" >"$APP/bin/pulseup-agent"
chmod 0755 "$APP/bin/pulseup-agent"
ln -sfn "$APP/bin/pulseup-agent" /usr/bin/pulseup-agent
install -m 0644 "$HERE/host-setup.sh" "$APP/host-setup.sh"
install -m 0755 "$HERE/uninstall.sh" "$APP/uninstall"

if [ ! -e "$PULSEUP_CONFIG" ]; then
	install -m 0640 "$SRC/conf/config.example" "$PULSEUP_CONFIG"
fi
pulseup_config_mode
install -m 0644 "$HERE/logrotate/pulseup-agent" /etc/logrotate.d/pulseup-agent

echo "install.sh: systemd units in $UNIT_DIR"
sh "$HERE/render-units.sh" "$UNIT_DIR" "$PY"
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	systemctl enable pulseup-supervisor.service pulseup-worker.service
fi

cat <<MSG
install.sh: installed pulseup-agent $(/usr/bin/pulseup-agent version | cut -d' ' -f2).
Next steps:
  1. set WEBSOCKET_URL (and ENROLL_CA_PIN or ENROLL_CA_FILE) in $PULSEUP_CONFIG
  2. pulseup-agent enroll --join-token-file /path/to/token
  3. systemctl start pulseup-supervisor pulseup-worker
MSG
