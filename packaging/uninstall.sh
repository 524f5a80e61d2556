#!/bin/sh
# The packaged uninstall behind the supervisor's agent.uninstall op
# (docs/operations.md, "Upgrade, remove, purge"), installed as
# /usr/lib/pulseup-agent/uninstall. It removes
# the agent and keeps configuration, certificates, backups and every managed
# app and database container running.
set -eu

FLAG=/var/run/pulseup-agent/delete-needed
UNITS="pulseup-worker.service pulseup-supervisor.service"

# Stopping pulseup-supervisor.service (KillMode=mixed) kills everything in its
# cgroup, this script included when the supervisor started it: run from a
# root-only copy in a transient unit of its own instead.
if [ -z "${PULSEUP_UNINSTALL_DETACHED:-}" ] && [ -d /run/systemd/system ] \
	&& command -v systemd-run >/dev/null 2>&1; then
	dir=$(mktemp -d /run/pulseup-uninstall.XXXXXX)
	cp "$0" "$dir/uninstall"
	exec systemd-run --quiet --collect --unit="pulseup-agent-uninstall-$$" \
		--setenv=PULSEUP_UNINSTALL_DETACHED=1 /bin/sh "$dir/uninstall"
fi

if dpkg-query -W -f='${db:Status-Abbrev}' pulseup-agent 2>/dev/null | grep -q '^ii'; then
	DEBIAN_FRONTEND=noninteractive dpkg --remove pulseup-agent
else
	# The layout of packaging/install.sh.
	if [ -d /run/systemd/system ]; then
		systemctl disable --now $UNITS || true
	fi
	for unit in $UNITS; do
		rm -f "/etc/systemd/system/$unit"
	done
	rm -f /usr/bin/pulseup-agent /etc/logrotate.d/pulseup-agent
	rm -rf /usr/lib/pulseup-agent
	[ -d /run/systemd/system ] && systemctl daemon-reload || true
fi
rm -f "$FLAG"
