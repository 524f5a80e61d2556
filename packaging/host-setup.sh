# Accounts, directories and modes of a PulseUp agent host.
#
# Sourced by the Debian postinst and by install.sh so both create exactly the
# same layout; POSIX sh, idempotent, safe to run on every upgrade. Modes
# follow docs/operations.md, "Install" (STATE_DIR 0700, the config root:pulseup
# 0640) and the two-process split: root owns what the supervisor alone may change
# (the update store, the config), pulseup-worker owns what the worker writes.
# Paths are the defaults of agent/config.py; tests/packaging checks both.

PULSEUP_GROUP=pulseup
PULSEUP_USER=pulseup-worker
PULSEUP_HOME=/opt/pulseup
PULSEUP_CONFIG=/etc/pulseup-agent/config

# "path owner group mode", one per line; the parents come first.
PULSEUP_DIRS="/etc/pulseup-agent root root 0755
/var/lib/pulseup root pulseup 0750
/var/lib/pulseup/certs pulseup-worker pulseup 0700
/var/lib/pulseup/state pulseup-worker pulseup 0700
/var/lib/pulseup/backups pulseup-worker pulseup 0750
/var/lib/pulseup-agent root root 0700
/var/log/pulseup root pulseup 0750
/var/log/pulseup/deployments pulseup-worker pulseup 0750
/opt/pulseup pulseup-worker pulseup 0750"

pulseup_create_accounts() {
	if ! getent group "$PULSEUP_GROUP" >/dev/null; then
		if command -v addgroup >/dev/null 2>&1; then
			addgroup --system --quiet "$PULSEUP_GROUP"
		else
			groupadd --system "$PULSEUP_GROUP"
		fi
	fi
	if ! getent passwd "$PULSEUP_USER" >/dev/null; then
		if command -v adduser >/dev/null 2>&1; then
			adduser --system --quiet --ingroup "$PULSEUP_GROUP" --home "$PULSEUP_HOME" \
				--no-create-home --shell /usr/sbin/nologin \
				--gecos "PulseUp agent worker" "$PULSEUP_USER"
		else
			useradd --system --gid "$PULSEUP_GROUP" --home-dir "$PULSEUP_HOME" \
				--no-create-home --shell /usr/sbin/nologin \
				--comment "PulseUp agent worker" "$PULSEUP_USER"
		fi
	fi
	# Docker access through group membership, never SupplementaryGroups= in
	# the unit (docs/operations.md, "The units"). Membership is root-equivalent.
	if getent group docker >/dev/null; then
		usermod -a -G docker "$PULSEUP_USER"
	fi
}

# An administrator's dpkg-statoverride entry wins over our owner and mode.
_pulseup_overridden() {
	command -v dpkg-statoverride >/dev/null 2>&1 && dpkg-statoverride --list "$1" >/dev/null 2>&1
}

pulseup_create_dirs() {
	echo "$PULSEUP_DIRS" | while read -r path owner group mode; do
		[ -d "$path" ] || mkdir -p "$path"
		if ! _pulseup_overridden "$path"; then
			chown "$owner:$group" "$path"
			chmod "$mode" "$path"
		fi
	done
}

# The config may hold JOIN_TOKEN: readable by the worker's group only.
pulseup_config_mode() {
	[ -f "$PULSEUP_CONFIG" ] || return 0
	if _pulseup_overridden "$PULSEUP_CONFIG"; then
		return 0
	fi
	chown "root:$PULSEUP_GROUP" "$PULSEUP_CONFIG"
	chmod 0640 "$PULSEUP_CONFIG"
}

pulseup_setup_host() {
	pulseup_create_accounts
	pulseup_create_dirs
	pulseup_config_mode
}
