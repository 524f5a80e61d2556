#!/bin/sh
# Write the two systemd units into DIR from systemd/*.service.in, filling in
# values that have one source of truth in the code: RestartPreventExitStatus=
# from agent/exitcodes.py NO_RESTART, and TimeoutStopSec= from the default
# GRACEFUL_TIMEOUT in agent/config.py (plus 15 s to close and flush).
#   render-units.sh DIR [PYTHON]
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$1
PY=${2:-/usr/bin/python3}
values=$(PYTHONPATH=$(dirname "$HERE") "$PY" -c 'from agent import config, exitcodes
print(" ".join(str(code) for code in sorted(exitcodes.NO_RESTART)))
print(int(config.BY_NAME["GRACEFUL_TIMEOUT"].default) + 15)')
no_restart=$(echo "$values" | sed -n 1p)
timeout_stop=$(echo "$values" | sed -n 2p)
mkdir -p "$OUT"
for unit in pulseup-supervisor pulseup-worker; do
	sed -e "s/@NO_RESTART@/$no_restart/" -e "s/@TIMEOUT_STOP@/$timeout_stop/" \
		"$HERE/systemd/$unit.service.in" >"$OUT/$unit.service"
	chmod 0644 "$OUT/$unit.service"
done
