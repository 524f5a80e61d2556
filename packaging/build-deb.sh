#!/bin/bash
# Build pulseup-agent_<version>_<arch>.deb from this source tree.
#
#   packaging/build-deb.sh [OUTPUT_DIR]        (default: dist/)
#
# The equivalent of dh-virtualenv done by hand (docs/operations.md, "Install"): a virtualenv
# made with Debian's /usr/bin/python3 at its final path inside the staging
# tree, the project and its dependencies pip-installed into it from PyPI, the
# paths pip wrote rewritten from the staging root to /usr/lib/pulseup-agent,
# then dpkg-deb --root-owner-group (no fakeroot needed). Bytecode is compiled
# by the postinst, not shipped. Prints the path of the .deb on stdout.
#
# Environment:
#   PYTHON=/usr/bin/python3   interpreter of the venv (never a pyenv build
#                             under /root: the worker could not execute it)
#   PULSEUP_VERSION=X.Y.Z     override agent.__version__ (update test builds)
#   PIP_ARGS="..."            extra pip arguments (--find-links DIR, --no-index)
#   DEB_COMPRESSION=gzip      dpkg-deb -Z value (xz is ~4x slower to build)
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")
OUT=${1:-$SRC/dist}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-/usr/bin/python3}
APP=/usr/lib/pulseup-agent
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/root

log() { echo "build-deb: $*" >&2; }

VERSION=${PULSEUP_VERSION:-$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$SRC/agent/__init__.py")}
[ -n "$VERSION" ] || { log "cannot read __version__ from agent/__init__.py"; exit 1; }
# PEP 440 .devN sorts before the release; Debian's ~ does the same.
DEB_VERSION=${VERSION/.dev/\~dev}
ARCH=$(dpkg --print-architecture)
DEB=$OUT/pulseup-agent_${DEB_VERSION}_${ARCH}.deb

copy_source() {
	# Only what setup.py needs: no .venv, tests, or build leftovers.
	mkdir -p "$WORK/src"
	cp -r "$SRC/agent" "$SRC/setup.py" "$SRC/setup.cfg" "$SRC/README.md" "$WORK/src/"
	find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
	sed -i "s/^__version__ = .*/__version__ = \"$VERSION\"/" "$WORK/src/agent/__init__.py"
}

make_venv() {
	log "virtualenv with $PY ($("$PY" --version 2>&1)), installing pulseup-agent $VERSION"
	"$PY" -m venv "$STAGE$APP"
	# shellcheck disable=SC2086
	"$STAGE$APP/bin/pip" install --quiet --disable-pip-version-check --no-compile --use-pep517 \
		${PIP_ARGS:-} "$WORK/src" 2>&1 | grep -v 'is ignored' >&2 || true
	"$STAGE$APP/bin/python" -c 'import agent.cli' # the install must be importable
	"$STAGE$APP/bin/pip" uninstall --quiet --yes pip setuptools >/dev/null 2>&1 || true
}

relocate_venv() {
	# Scripts and pyvenv.cfg name the staging path; point them at the real one.
	grep -rlI --null "$STAGE$APP" "$STAGE$APP" | xargs -0 -r sed -i "s|$STAGE$APP|$APP|g"
	# A service venv, not a shell one: keep only the interpreter links. The
	# console scripts pip wrote have a #! into the venv, which lintian rejects
	# (wrong-path-for-interpreter); the entry point is a sh wrapper instead.
	find "$STAGE$APP/bin" -mindepth 1 ! -name 'python*' -exec rm -f {} +
	printf '#!/bin/sh\n# -I: never import from the cwd or PYTHON* variables; exec keeps the pid (Type=notify)\nexec %s/bin/python3 -I -m agent "$@"\n' \
		"$APP" >"$STAGE$APP/bin/pulseup-agent"
	chmod 0755 "$STAGE$APP/bin/pulseup-agent"
	# Bundled test suites are dead weight (and lintian noise).
	find "$STAGE$APP"/lib/python3*/site-packages -mindepth 2 -maxdepth 2 -type d -name tests \
		-exec rm -rf {} +
	# PyYAML's wheel links libyaml statically (lintian: embedded-library, an
	# error). Without _yaml PyYAML uses its pure-Python loader; the agent never
	# asks for the C loader and parses only small compose files.
	rm -f "$STAGE$APP"/lib/python3*/site-packages/yaml/_yaml*.so
	find "$STAGE$APP" -depth \( -name __pycache__ -o -name '*.pyc' \) -exec rm -rf {} +
	# Wheels ship .so files with debug symbols; strip as dh_strip would.
	find "$STAGE$APP" -type f -name '*.so*' -exec strip --strip-unneeded {} + 2>/dev/null || true
	# Relative links into /usr/bin (lintian: symlink-should-be-relative).
	for link in "$STAGE$APP"/bin/python*; do
		[ -L "$link" ] && ln -sfn "../../../bin/$(basename "$(readlink "$link")")" "$link"
	done
}

install_files() {
	install -d "$STAGE/usr/bin" "$STAGE/lib/systemd/system" "$STAGE/etc/pulseup-agent" \
		"$STAGE/etc/logrotate.d" "$STAGE/usr/share/doc/pulseup-agent" "$STAGE/usr/share/man/man8"
	ln -s ../lib/pulseup-agent/bin/pulseup-agent "$STAGE/usr/bin/pulseup-agent"
	# Values come from the code (exit codes, GRACEFUL_TIMEOUT); see render-units.sh.
	sh "$HERE/render-units.sh" "$STAGE/lib/systemd/system" "$PY"
	# 0640 already in the package: no world-readable window before the
	# postinst gives it to root:pulseup (docs/operations.md, "Install"; it may hold JOIN_TOKEN).
	install -m 0640 "$SRC/conf/config.example" "$STAGE/etc/pulseup-agent/config"
	install -m 0644 "$HERE/logrotate/pulseup-agent" "$STAGE/etc/logrotate.d/pulseup-agent"
	install -m 0644 "$HERE/host-setup.sh" "$STAGE$APP/host-setup.sh"
	install -m 0755 "$HERE/uninstall.sh" "$STAGE$APP/uninstall"
	install -m 0644 "$HERE/debian/copyright" "$STAGE/usr/share/doc/pulseup-agent/copyright"
	install -D -m 0644 "$HERE/debian/lintian-overrides" "$STAGE/usr/share/lintian/overrides/pulseup-agent"
	if [ -f "$SRC/docs/operations.md" ]; then
		install -m 0644 "$SRC/docs/operations.md" "$STAGE/usr/share/doc/pulseup-agent/operations.md"
	fi
	sed -e "s/@VERSION@/$DEB_VERSION/" -e "s/@DATE@/$(date -R)/" "$HERE/debian/changelog.in" \
		| gzip -9n >"$STAGE/usr/share/doc/pulseup-agent/changelog.gz"
	gzip -9n <"$HERE/pulseup-agent.8" >"$STAGE/usr/share/man/man8/pulseup-agent.8.gz"
}

control_files() {
	install -d "$STAGE/DEBIAN"
	sed -e "s/@VERSION@/$DEB_VERSION/" -e "s/@ARCH@/$ARCH/" \
		-e "s/@SIZE@/$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)/" \
		"$HERE/debian/control.in" >"$STAGE/DEBIAN/control"
	printf '%s\n' /etc/logrotate.d/pulseup-agent /etc/pulseup-agent/config >"$STAGE/DEBIAN/conffiles"
	install -m 0755 "$HERE/debian/postinst" "$HERE/debian/prerm" "$HERE/debian/postrm" "$STAGE/DEBIAN/"
	(cd "$STAGE" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -print0 \
		| sort -z | xargs -0 md5sum | sed 's|  \./|  |') >"$STAGE/DEBIAN/md5sums"
	chmod 0644 "$STAGE/DEBIAN/md5sums" "$STAGE/DEBIAN/control" "$STAGE/DEBIAN/conffiles"
}

copy_source
make_venv
relocate_venv
install_files
control_files
log "packing $(basename "$DEB")"
dpkg-deb --root-owner-group -Z"${DEB_COMPRESSION:-gzip}" --build "$STAGE" "$DEB" >&2
echo "$DEB"
