"""Docker networks: ``pulseup-net``, the bridge every PulseUp container joins."""

from agent.services.docker.errors import translate
from agent.services.docker.labels import MANAGED, NETWORK

def ensure_network(client, name=NETWORK):
    """The bridge network ``name`` (a docker.DockerClient's), created when missing."""
    import docker.errors

    with translate(f"network {name}"):
        for attempt in range(2):
            # the names filter matches substrings: compare exactly
            for network in client.networks.list(names=[name]):
                if network.name == name:
                    return network
            try:
                return client.networks.create(name, driver="bridge", labels={MANAGED: "true"})
            except docker.errors.APIError:
                if attempt:  # not created concurrently by someone else: a real failure
                    raise
