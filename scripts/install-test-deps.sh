#!/bin/sh
# Install every tool the test suite runs, as root on Debian (tests/test_toolchain.py).
#
# Idempotent and cheap when repeated: if every package is already installed it
# exits without touching apt (about a second). Services are never left running:
# systemd is not PID 1 on the test machines (docs/hosts.md, "The test
# machines"), so postinst scripts must not try to start daemons, and a daemon a
# maintainer script starts anyway is stopped again. The tests start private
# instances of every service themselves.
set -eu

# Every package that ships an executable the suite runs (tests/test_toolchain.py declares
# them and checks this list with dpkg -S). The clients come with the servers but are named
# because the tests call them; libc-bin gives ldd for the Caddy image; logrotate checks the
# packaged logrotate config; chromium and chromium-driver run the web console's browser
# tests; the Essential ones (dpkg, tar, grep...) are named so that the list is complete
# on a minimal image too (a slim container has no systemd, openssh-client or procps).
PACKAGES="docker.io containerd caddy git busybox-static postgresql mariadb-server lintian \
redis-server zstd debootstrap iproute2 curl ca-certificates python3 python3-venv \
docker-compose mariadb-client mariadb-client-core mariadb-server-core redis-tools \
postgresql-client postgresql-client-common libc-bin procps util-linux mount tar gzip \
logrotate systemd passwd openssh-client dpkg apt dash bash grep sed coreutils \
chromium chromium-driver"

# pidfiles of the system-wide instances the Debian packages would start.
SYSTEM_PIDFILES="/run/mysqld/mysqld.pid /run/redis/redis-server.pid \
/run/postgresql/15-main.pid /run/docker.pid /run/containerd/containerd.pid"

POLICY=/usr/sbin/policy-rc.d

log() { echo "install-test-deps: $*" >&2; }

missing_packages() {
    for pkg in $PACKAGES; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
        case "$status" in
            ii*) ;;
            *) echo "$pkg" ;;
        esac
    done
}

# Pids from the system pidfiles that are alive right now, one per line.
running_system_daemons() {
    for f in $SYSTEM_PIDFILES; do
        [ -r "$f" ] || continue
        pid=$(cat "$f" 2>/dev/null || true)
        case "$pid" in ''|*[!0-9]*) continue ;; esac
        kill -0 "$pid" 2>/dev/null && echo "$pid"
    done
    return 0
}

# A policy-rc.d that exits 101 makes invoke-rc.d and deb-systemd-invoke refuse
# every start (policy-rc.d(8)). Keep an existing one; remove ours afterwards.
install_policy() {
    if [ -e "$POLICY" ]; then
        OWN_POLICY=0
        return
    fi
    printf '#!/bin/sh\n# installed by install-test-deps.sh\nexit 101\n' >"$POLICY"
    chmod 0755 "$POLICY"
    OWN_POLICY=1
}

remove_policy() {
    if [ "${OWN_POLICY:-0}" = 1 ]; then
        rm -f "$POLICY"
    fi
}

# Stop any system daemon that appeared during the install (mariadb-server's
# postinst, for one, can start a server without going through invoke-rc.d).
stop_new_daemons() {
    before="$1"
    for pid in $(running_system_daemons); do
        if ! echo "$before" | grep -qx "$pid"; then
            log "stopping daemon $pid started by a maintainer script"
            kill -TERM "$pid" 2>/dev/null || true
            wait_gone "$pid"
        fi
    done
}

wait_gone() {
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -KILL "$1" 2>/dev/null || true
}

apt_install() {
    # Parallel test runs on one machine may call this script at once: apt's own
    # lock only fails fast, so wait for it instead.
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -q
    # shellcheck disable=SC2086
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $1
}

main() {
    if [ "$(id -u)" != 0 ]; then
        log "must run as root"
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found: this script supports Debian only"
        exit 1
    fi
    missing=$(missing_packages | tr '\n' ' ')
    if [ -z "${missing% }" ]; then
        log "all packages present"
        return
    fi
    log "installing: $missing"
    before=$(running_system_daemons)
    install_policy
    trap 'remove_policy' EXIT INT TERM
    apt_install "$missing"
    stop_new_daemons "$before"
}

main "$@"
