#!/usr/bin/env bash
# Run the test suite. As root on Debian it first installs the services the
# integration tests start (docker.io, caddy, git, databases...).
#   -c  coverage report     -v  verbose       -p PATH  only that path
#   -k EXPR  pytest -k      -r  random order + gevent blocking monitor (not CI)
set -euo pipefail
cd "$(dirname "$0")"

coverage=0 verbose=0 race=0 paths=() kexpr=""
while getopts "cvrp:k:h" opt; do
  case "$opt" in
    c) coverage=1 ;;
    v) verbose=1 ;;
    r) race=1 ;;
    p) paths+=("$OPTARG") ;;
    k) kexpr="$OPTARG" ;;
    *) sed -n '2,5p' "$0"; exit 2 ;;
  esac
done

if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then
  bash scripts/install-test-deps.sh
  # Tests run the worker as unprivileged users, which must read the checkout and execute
  # its venv. A clone under a private directory (/root is 0700) is copied to a readable
  # place and the run continues from there (docs/hosts.md, "The test machines").
  if [ -z "${PULSEUP_TEST_RELOCATED:-}" ] && ! runuser -u nobody -- test -r "$PWD/agent/__init__.py"; then
    dest=/var/tmp/pulseup-test-checkout
    echo "test.sh: $PWD is not readable by other users; running from a copy in $dest" >&2
    mkdir -p "$dest"
    find "$dest" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +   # keep only its venv
    tar -C "$PWD" --exclude=./.venv -cf - . | tar -C "$dest" -xf -
    chmod -R go+rX "$dest"
    PULSEUP_TEST_RELOCATED=1 exec "$dest/test.sh" "$@"
  fi
fi

# The venv is made from Debian's interpreter: processes dropped to another
# user cannot execute the pyenv build under /root (docs/hosts.md, "The test machines").
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
if [ ! -x .venv/bin/python ] || [ setup.cfg -nt .venv/.installed ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v 'is ignored' || true
  touch .venv/.installed
fi

args=(-p no:cacheprovider -q -r fEs --durations=25)
[ "$verbose" = 1 ] && args+=(-v)
[ -n "$kexpr" ] && args+=(-k "$kexpr")
[ "$coverage" = 1 ] && args+=(--cov=agent --cov-report=term-missing)
if [ "$race" = 1 ]; then
  args+=(-p tests.blocking_monitor --random-order)
  export PULSEUP_BLOCKING_THRESHOLD="${PULSEUP_BLOCKING_THRESHOLD:-0.1}"
  export GEVENT_MONITOR_THREAD_ENABLE=true GEVENT_MAX_BLOCKING_TIME="$PULSEUP_BLOCKING_THRESHOLD"
fi
[ ${#paths[@]} = 0 ] && paths=(tests)

set +e
.venv/bin/python -m pytest "${args[@]}" "${paths[@]}"
rc=$?
set -e
# pytest's 5 = no tests collected: a run that tested nothing has failed.
[ "$rc" = 5 ] && echo "test.sh: no tests were collected" >&2
exit "$rc"
