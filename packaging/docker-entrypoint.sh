#!/bin/sh
# Entrypoint of the development image (Dockerfile): `pulseup-agent "$@"`.
#
# docker-compose.yml bind-mounts a host directory as STATE_DIR (so that the
# host's engine can mount the proxy's state, PULSEUP_CADDY_HOST_PATH). Docker
# creates a missing bind source as root:root 0755, and the image's ownership
# applies only to named volumes, so the worker (pulseup-worker) could not
# write its outbox there. Run as root, hand the directories to the worker
# first, with the modes of docs/design.md, "Settings and files".
set -eu
if [ "$(id -u)" = 0 ] && getent passwd pulseup-worker >/dev/null; then
	for dir in /var/lib/pulseup/state /var/lib/pulseup/certs; do
		if [ -d "$dir" ]; then
			chown pulseup-worker:pulseup "$dir"
			chmod 0700 "$dir"
		fi
	done
fi

# The engine's socket comes from the host (docker-compose.yml): its group is the host's
# docker group, whose id the image's docker group (made by docker.io's postinst) need not
# share, and the supervisor gives the worker the docker group by name
# (agent/supervisor/main.py worker_spec). Renumber that group to the socket's (-o: the id
# may belong to another group of the image). Group 0 is refused: that would hand the
# worker root's group for every file of the container.
sock=/var/run/docker.sock
if [ "$(id -u)" = 0 ] && [ -S "$sock" ] && getent group docker >/dev/null; then
	gid=$(stat -c %g "$sock")
	if [ "$gid" = 0 ]; then
		echo "pulseup-docker-entrypoint: $sock belongs to group 0; the worker cannot use it" >&2
	elif [ "$gid" != "$(getent group docker | cut -d: -f3)" ]; then
		groupmod -o -g "$gid" docker
	fi
fi
exec /usr/bin/pulseup-agent "$@"
