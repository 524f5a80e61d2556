#!/bin/sh
# Entrypoint of the development image (Dockerfile): `pulseup-agent "$@"`.
#
# docker-compose.yml bind-mounts a host directory as STATE_DIR (so that the
# host's engine can mount the proxy's state, PULSEUP_CADDY_HOST_PATH). Docker
# creates a missing bind source as root:root 0755, and the image's ownership
# applies only to named volumes, so the worker (pulseup-worker) could not
# write its outbox there. Run as root, hand the directories to the worker
# first, with the modes of decisions 23.
set -eu
if [ "$(id -u)" = 0 ] && getent passwd pulseup-worker >/dev/null; then
	for dir in /var/lib/pulseup/state /var/lib/pulseup/certs; do
		if [ -d "$dir" ]; then
			chown pulseup-worker:pulseup "$dir"
			chmod 0700 "$dir"
		fi
	done
fi
exec /usr/bin/pulseup-agent "$@"
