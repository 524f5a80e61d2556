"""What the deploy fixtures share (the conftests of tests/integration/deploy, proxy_deploy and
security): the agent's config for a deploy test, faster deploys while an agent runs, and the
removal of what a test's services left on the engine."""
import contextlib
import os

import docker.errors

from agent import config
from agent.services.deploy import gate, swap


def deploy_config(root, docker_host, git_server, **extra):
    """The agent's config: its directories below ``root``, the test engine, and the token git
    server as the one allowed git host over plain HTTP; ``extra`` settings on top."""
    return config.defaults().replace(
        state_dir=os.path.join(root, "state"), cert_dir=os.path.join(root, "certs"), docker_host=docker_host,
        apps_dir=os.path.join(root, "apps"), deployment_dir=os.path.join(root, "deployments"),
        deployment_log_dir=os.path.join(root, "logs"), allow_insecure_transport=True,
        pulseup_git_allowed_hosts=(f"127.0.0.1:{git_server.port}",), **extra)


@contextlib.contextmanager
def quick_deploys(agent):
    """Yields ``agent`` while readiness probes run every 0.25 s (production: 1 s) and a swap
    stops the old container with a 1 s grace (busybox httpd as PID 1 ignores SIGTERM: the
    30 s grace would only slow the suite down); closes the agent at the end."""
    interval, gate.ReadinessGate.probe_interval = gate.ReadinessGate.probe_interval, 0.25
    grace, swap.Swap.stop_grace = swap.Swap.stop_grace, 1
    try:
        yield agent
    finally:
        gate.ReadinessGate.probe_interval = interval
        swap.Swap.stop_grace = grace
        agent.close()


def service_leftovers(client):
    """The body of a fixture (``yield from``): yields ``register(uid)``; after the test removes
    what each registered service uid left on the engine."""
    uids = []
    yield uids.append
    for uid in uids:
        remove_service(client, uid)


def remove_service(client, uid):
    """The uid's containers (by the agent's label or its compose project), compose networks
    and volumes, and the images its deploys built."""
    service = {"label": f"pulseup.service_uid={uid}"}
    project = {"label": f"com.docker.compose.project=pulseup-{uid}"}
    for filters in (service, project):
        for container in client.containers.list(all=True, filters=filters):
            container.remove(force=True)
    for network in client.networks.list(filters=project):
        network.remove()
    for volume in client.volumes.list(filters=project):
        volume.remove(force=True)
    _remove_images(client, uid)


def _remove_images(client, uid):
    for image in client.images.list(name=f"pulseup-app-{uid}"):
        for tag in image.tags:
            client.images.remove(tag, force=True)
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.remove(f"pulseup-app:{uid}", force=True)
    for image in client.images.list(filters={"reference": f"pulseup-{uid}_*"}):   # compose builds
        client.images.remove(image.id, force=True)
