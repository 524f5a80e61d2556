"""Helpers of the container integration tests (a module of its own: conftest modules are
not importable by name when several test directories have one)."""
import os

import gevent

# A shell loop that ends at once on SIGTERM (busybox sh runs the trap while in `wait`), so
# a 30 s stop grace never has to run out.
LOOP = ("trap 'exit 0' TERM; i=0; while true; do echo \"out $i\"; echo \"err $i\" >&2; "
        "i=$((i+1)); sleep 1 & wait $!; done")
IDLE = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"


class Sink:
    """Records events; ``on_event`` may be replaced to process them without keeping them."""

    def __init__(self):
        self.events = []

    def emit(self, event, data):
        self.events.append((event, data))

    def named(self, name):
        return [data for event, data in self.events if event == name]


def app_labels(uid, version, **extra):
    labels = {"pulseup.managed": "true", "pulseup.service_uid": uid, "pulseup.deployment_uid": f"dep_{uid}_{version}",
              "pulseup.lifecycle.version": str(version),
              "pulseup.lifecycle.final_name": f"pulseup-app-{uid}-v{version:04d}"}
    labels.update(extra)
    return labels


def wait_until(predicate, timeout=20.0, interval=0.05, what="condition"):
    with gevent.Timeout(timeout, AssertionError(f"timed out waiting for {what}")):
        while True:
            value = predicate()
            if value:
                return value
            gevent.sleep(interval)


def dockerd_pid(docker_host):
    directory = os.path.dirname(docker_host.removeprefix("unix://"))
    with open(os.path.join(directory, "dockerd.pid")) as handle:
        return int(handle.read().strip())
