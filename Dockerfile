# Development image: supervisor + worker (`pulseup-agent run`) in one container,
# against a devserver (docker-compose.yml). Not for production: production is
# the Debian package and its two systemd units (docs/operations.md).
#
# No registry is reachable on the project's build machines (docs/operations.md,
# "Development containers"); the test (tests/integration/devcontainer/) builds
# this file FROM a stand-in for debian:bookworm-slim made there with
# debootstrap + `docker import`.
FROM debian:bookworm-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates git docker.io \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system pulseup \
 && useradd --system --gid pulseup --home-dir /opt/pulseup --shell /usr/sbin/nologin pulseup-worker \
 && usermod -a -G docker pulseup-worker \
 && install -d -o root -g pulseup -m 0750 /var/lib/pulseup \
 && install -d -o pulseup-worker -g pulseup -m 0700 /var/lib/pulseup/certs /var/lib/pulseup/state \
 && install -d -o pulseup-worker -g pulseup -m 0750 /var/lib/pulseup/backups /opt/pulseup \
 && install -d -o root -g pulseup -m 0750 /var/log/pulseup \
 && install -d -o pulseup-worker -g pulseup -m 0750 /var/log/pulseup/deployments

# The venv is made with Debian's interpreter outside /root, so the worker
# dropped to pulseup-worker can execute it (docs/hosts.md, "The test machines").
COPY setup.py setup.cfg README.md /src/
COPY agent /src/agent
RUN python3 -m venv /usr/lib/pulseup-agent \
 && /usr/lib/pulseup-agent/bin/pip install --no-cache-dir /src \
 && ln -s /usr/lib/pulseup-agent/bin/pulseup-agent /usr/bin/pulseup-agent
# Hands bind-mounted state dirs to the worker, then execs pulseup-agent.
COPY packaging/docker-entrypoint.sh /usr/local/bin/pulseup-docker-entrypoint

ENV LOG_FORMAT=json
# `run`: the root supervisor plus a worker child as pulseup-worker, restarted on failure.
ENTRYPOINT ["/usr/local/bin/pulseup-docker-entrypoint"]
CMD ["run"]
