#!/usr/bin/env bash
# The one-command demo: start the bundled dev control plane, start an agent that enrolls
# against it, show the agent's answers to agent.hardware.info and server.stats.live, and
# leave both running until Ctrl-C.
#
# When a Docker engine is reachable (or with --docker, which as root installs docker.io and
# starts a private dockerd), the agent then shows its main job: it deploys a sample app from a
# local git repository behind its Caddy, deploys PostgreSQL and backs it up. Images are built
# from this host's files; no registry is used (agent/devserver/demo.py).
#
# As root (the usual case on a fresh server) the agent runs as `pulseup-agent run`: the
# root supervisor plus a worker child dropped to the `pulseup-dev` system user, from a venv
# made with Debian's /usr/bin/python3 outside /root: a worker dropped to another user cannot
# run an interpreter that lives under /root (docs/hosts.md, "The test machines"). As another
# user it runs the worker in-process as that user.
set -euo pipefail
FORCE_DOCKER=0
case "${1:-}" in
  --docker) FORCE_DOCKER=1 ;;
  "") ;;
  *) echo "usage: $0 [--docker]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")"
SRC=$(pwd)
LISTEN=${PULSEUP_DEMO_LISTEN:-127.0.0.1:8765}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

if [ "$(id -u)" = 0 ]; then
  DEMO=${PULSEUP_DEMO_DIR:-/var/tmp/pulseup-demo}
  VENV=/opt/pulseup-dev/venv
  USER_NAME=pulseup-dev
  id "$USER_NAME" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$USER_NAME"
else
  DEMO=${PULSEUP_DEMO_DIR:-$SRC/.pulseup-demo}
  VENV=$SRC/.venv
  USER_NAME=$(id -un)
fi

step() { printf '\n==> %s\n' "$*"; }

step "Preparing the virtualenv in $VENV"
if [ ! -x "$VENV/bin/pulseup-agent" ] || [ setup.cfg -nt "$VENV/.installed" ] || [ "$(id -u)" = 0 ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  if [ "$(id -u)" = 0 ]; then
    # a real install (not editable): the worker user cannot read a checkout under /root
    "$VENV/bin/pip" install -q --disable-pip-version-check "$SRC" 2>&1 | grep -v 'is ignored' || true
  else
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$SRC" 2>&1 | grep -v 'is ignored' || true
  fi
  touch "$VENV/.installed"
fi
AGENT="$VENV/bin/pulseup-agent"

mkdir -p "$DEMO"/{agent/certs,agent/state,logs,run}
chmod 0755 "$DEMO"
if [ "$(id -u)" = 0 ]; then
  chown -R "$USER_NAME:$USER_NAME" "$DEMO/agent" "$DEMO/logs"
fi
chmod 0700 "$DEMO/agent/certs" "$DEMO/agent/state"

pids=()
cleanup() {
  trap - INT TERM EXIT
  printf '\nStopping the agent and the dev control plane...\n'
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -f "$DEMO/docker/dockerd.pid" ]; then   # the private engine the demo started
    kill -TERM "$(cat "$DEMO/docker/dockerd.pid")" 2>/dev/null || true
  fi
}
trap cleanup INT TERM EXIT

FULL=0
if [ "$FORCE_DOCKER" = 1 ] && [ "$(id -u)" = 0 ] && ! command -v dockerd >/dev/null; then
  step "Installing docker.io, busybox-static, caddy and git (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io containerd busybox-static caddy git
fi
step "Looking for a Docker engine for the full demo"
start_docker=()
[ "$FORCE_DOCKER" = 1 ] && [ "$(id -u)" = 0 ] && start_docker=(--start-docker)
if DEMO_SETTINGS=$("$VENV/bin/python" -m agent.devserver.demo prepare --dir "$DEMO" --user "$USER_NAME" "${start_docker[@]}"); then
  FULL=1
fi

step "Starting the dev control plane on https://$LISTEN (log: $DEMO/devserver.log)"
"$AGENT" devserver --data-dir "$DEMO/devserver" --listen "$LISTEN" >"$DEMO/devserver.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  [ -f "$DEMO/devserver/admin.token" ] && "$AGENT" devserver --data-dir "$DEMO/devserver" --listen "$LISTEN" agents >/dev/null 2>&1 && break
  sleep 0.1
done
TOKEN=$("$AGENT" devserver --data-dir "$DEMO/devserver" --listen "$LISTEN" token)
install -m 0644 "$DEMO/devserver/ca.crt" "$DEMO/ca.crt"

# The join token goes into a config file, never onto a command line (docs/protocol.md,
# "Enrollment and certificates").
umask 027
cat >"$DEMO/agent.conf" <<CONF
WEBSOCKET_URL=wss://$LISTEN/ws/agent_v2
JOIN_TOKEN=$TOKEN
ENROLL_CA_FILE=$DEMO/ca.crt
CERT_DIR=$DEMO/agent/certs
STATE_DIR=$DEMO/agent/state
SUPERVISOR_SOCKET=$DEMO/run/supervisor.sock
WORKER_USER=$USER_NAME
WORKER_GROUP=$USER_NAME
AGENT_LOG_DIR=$DEMO/logs
PULSEUP_BACKUP_DIR=$DEMO/backups
LOG_FORMAT=text
CONF
[ "$FULL" = 1 ] && printf '%s\n' "$DEMO_SETTINGS" >>"$DEMO/agent.conf"
[ "$(id -u)" = 0 ] && chgrp "$USER_NAME" "$DEMO/agent.conf"
umask 022

step "Starting the agent (log: $DEMO/agent.log)"
"$AGENT" --config "$DEMO/agent.conf" run >"$DEMO/agent.log" 2>&1 &
pids+=($!)

uid=""
for _ in $(seq 150); do
  uid=$("$AGENT" devserver --data-dir "$DEMO/devserver" --listen "$LISTEN" agents 2>/dev/null \
        | "$VENV/bin/python" -c 'import json,sys; a=[x for x in json.load(sys.stdin)["agents"] if x["connected"]]; print(a[-1]["server_uid"] if a else "")' || true)
  [ -n "$uid" ] && break
  sleep 0.2
done
if [ -z "$uid" ]; then
  echo "The agent did not connect within 30 s; its log:" >&2
  tail -n 30 "$DEMO/agent.log" >&2
  exit 1
fi
echo "Agent enrolled and connected as $uid"

for command in agent.hardware.info server.stats.live; do
  step "$command"
  "$AGENT" devserver --data-dir "$DEMO/devserver" --listen "$LISTEN" call "$uid" "$command"
done

cat <<MSG

The agent and the dev control plane keep running. Try:
  $AGENT devserver --data-dir $DEMO/devserver --listen $LISTEN call $uid agent.ping '{"hello":"world"}'
  $AGENT devserver --data-dir $DEMO/devserver --listen $LISTEN events $uid
  $AGENT --config $DEMO/agent.conf doctor
MSG

if [ "$FULL" = 1 ]; then
  step "The main job: deploy an app, a database and a backup through the agent"
  # in the foreground: it prints the URLs, then serves the sample repository until Ctrl-C
  "$VENV/bin/python" -m agent.devserver.demo show --dir "$DEMO" --devserver-dir "$DEMO/devserver" \
    --listen "$LISTEN" --uid "$uid" || echo "The demo stopped; the agent's log: $DEMO/agent.log" >&2
else
  cat <<MSG

No Docker engine is reachable, so the demo stops at the answers above. For the full demo (an app
deployed from a local git repository behind Caddy, PostgreSQL and a backup) start Docker, or run
  sudo ./run.sh --docker
which installs docker.io on Debian and starts a private engine for the demo.
Stop with Ctrl-C.
MSG
  wait
fi
