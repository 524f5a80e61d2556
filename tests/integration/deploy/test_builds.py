"""Both builders on the real test engine (issue 18): BuildKit through a docker CLI that has it
(Debian's docker.io 20.10 client here), the classic SDK builder when forced by
DOCKER_FORCE_LEGACY_BUILDS or when no CLI can drive BuildKit. Lines stream while the build
runs in both cases. A `RUN --mount` step tells the builders apart: only BuildKit knows it."""
import os
import time
import uuid

import gevent
import gevent.event

import docker.errors
import pytest

from agent import config
from agent.errors import AgentError
from agent.services.build import BuildService
from agent.services.docker import DockerService

pytestmark = pytest.mark.integration

BUILDKIT_ONLY = ("FROM {base}\nARG GREETING\nRUN --mount=type=cache,target=/cache "
                 "echo \"hello $GREETING\" > /msg && touch /cache/seen\nCMD [\"cat\", \"/msg\"]\n")
# the marker is printed, then the step waits: the line must be seen before the image exists
SLOW = "FROM {base}\nRUN echo marker-{uid} && sleep 3\n"


@pytest.fixture
def builds(docker_host, docker_client, app_base_image, tmp_path):
    """make(dockerfile text, **cfg) -> (BuildService, context dir); tags removed afterwards."""
    made, tags = [], []

    def make(text, search_path=None, **settings):
        cfg = config.defaults().replace(docker_host=docker_host, **settings)
        service = BuildService(cfg, DockerService(cfg))
        if search_path is not None:
            service.buildkit.search_path = search_path
        context = tmp_path / f"ctx{len(made)}"
        context.mkdir()
        (context / "Dockerfile").write_text(text.format(base=app_base_image, uid=uid))
        made.append(service)
        return service, str(context)
    uid = uuid.uuid4().hex[:10]
    make.uid = uid
    make.tags = lambda n: [tags.append(f"pulseup-test/build-{uid}:{i}") or tags[-1] for i in range(n)]
    yield make
    for tag in tags:
        try:
            docker_client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass
    for service in made:
        service.docker.close()


def _output(docker_client, image):
    return docker_client.containers.run(image, remove=True).decode().strip()


def test_buildkit_builds_with_args_from_the_environment(builds, docker_client):
    service, context = builds(BUILDKIT_ONLY)
    tags = builds.tags(2)
    lines = []
    image_id = service.build(context, "Dockerfile", tags, {"GREETING": "from-env", "UNDECLARED": "x"},
                             lambda text, level: lines.append((level, text)))
    assert lines[0][1].startswith("builder: BuildKit through ")
    assert any(text.startswith("#") and "RUN --mount" in text for _, text in lines), lines
    assert all(text.strip() for _, text in lines)
    for tag in tags:
        assert docker_client.images.get(tag).id == image_id
    assert _output(docker_client, tags[0]) == "hello from-env"


def test_forced_legacy_uses_the_classic_builder(builds, docker_client):
    service, context = builds(BUILDKIT_ONLY, docker_force_legacy_builds=True)
    lines = []
    with pytest.raises(AgentError) as err:          # the classic builder has no RUN --mount
        service.build(context, "Dockerfile", builds.tags(1), {}, lambda text, level: lines.append(text))
    assert err.value.code == "command_failed" and "BuildKit" in err.value.message
    assert lines[0] == "builder: classic (DOCKER_FORCE_LEGACY_BUILDS=true)"
    plain, context = builds("FROM {base}\nARG GREETING\nRUN echo \"hi $GREETING\" > /msg\nCMD [\"cat\", \"/msg\"]\n",
                            docker_force_legacy_builds=True)
    tags = builds.tags(2)
    lines = []
    image_id = plain.build(context, "Dockerfile", tags, {"GREETING": "classic"}, lambda text, level: lines.append(text))
    assert any(text.startswith("Step 1/") for text in lines), lines
    assert docker_client.images.get(tags[1]).id == image_id
    assert _output(docker_client, tags[0]) == "hi classic"


def test_without_a_capable_cli_the_classic_builder_runs(builds, tmp_path):
    empty = tmp_path / "no-docker-here"
    empty.mkdir()
    service, context = builds(BUILDKIT_ONLY, search_path=str(empty))
    lines = []
    with pytest.raises(AgentError):
        service.build(context, "Dockerfile", builds.tags(1), {}, lambda text, level: lines.append(text))
    assert lines[0].startswith("builder: classic (no docker CLI with BuildKit")


@pytest.mark.parametrize("forced", [False, True], ids=["buildkit", "classic"])
def test_lines_stream_while_the_build_runs(builds, docker_client, forced):
    service, context = builds(SLOW, docker_force_legacy_builds=forced)
    tags = builds.tags(1)
    seen_before_image = []

    def on_line(text, level):
        if f"marker-{builds.uid}" in text and "echo" not in text:
            try:
                docker_client.images.get(tags[0])
                seen_before_image.append(False)
            except docker.errors.ImageNotFound:
                seen_before_image.append(True)
    service.build(context, "Dockerfile", tags, {}, on_line)
    assert seen_before_image and seen_before_image[0] is True


def test_a_failing_buildkit_step_is_command_failed_with_a_tail(builds):
    service, context = builds("FROM {base}\nRUN echo about-to-fail-{uid} && false\n")
    lines = []
    with pytest.raises(AgentError) as err:
        service.build(context, "Dockerfile", builds.tags(1), {}, lambda text, level: lines.append((level, text)))
    assert lines[0][1].startswith("builder: BuildKit")
    error = err.value
    assert error.code == "command_failed" and error.details["exit_code"] != 0
    assert f"about-to-fail-{builds.uid}" in error.details["stderr_tail"]
    assert any(level == "ERROR" for level, _ in lines)


def test_build_args_named_like_cli_settings_use_the_classic_builder(builds, docker_client):
    service, context = builds("FROM {base}\nARG DOCKER_HOST\nRUN echo \"[$DOCKER_HOST]\" > /msg\nCMD [\"cat\", \"/msg\"]\n")
    tags = builds.tags(1)
    lines = []
    service.build(context, "Dockerfile", tags, {"DOCKER_HOST": "tcp://elsewhere:1"}, lambda text, level: lines.append(text))
    assert lines[0] == "builder: classic (a build arg is named like a docker CLI setting)"
    assert _output(docker_client, tags[0]) == "[tcp://elsewhere:1]"
    assert os.environ.get("DOCKER_HOST") != "tcp://elsewhere:1"


class _CancelOnly:
    """The part of a call context a build uses: no deadline, cancellation callbacks."""

    def __init__(self):
        self.callbacks = []

    def remaining(self):
        return None

    def on_cancel(self, callback):
        self.callbacks.append(callback)

    def cancel(self):
        for callback in self.callbacks:
            callback()


def _sleepers(seconds):
    import psutil
    return [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[-2:] == ["sleep", seconds]]


def test_cancelling_a_buildkit_build_stops_the_cli_and_the_step(builds, docker_client):
    """The CLI's process group is stopped; the engine drops the session's build and its RUN
    step. The step would sleep 291 s; everything must be gone within 60 s."""
    service, context = builds("FROM {base}\nRUN echo marker-{uid} && sleep 291\n")
    tags = builds.tags(1)
    ctx = _CancelOnly()
    started = gevent.event.Event()

    def on_line(text, level):
        if f"marker-{builds.uid}" in text and "echo" not in text:
            started.set()
    build = gevent.spawn(service.build, context, "Dockerfile", tags, {}, on_line, ctx)
    assert started.wait(timeout=120), "the RUN step never started"
    assert _sleepers("291"), "the step's process is not visible on the host"
    ctx.cancel()
    build.join(timeout=60)
    assert build.ready() and isinstance(build.exception, AgentError)
    deadline = time.monotonic() + 60
    while _sleepers("291") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _sleepers("291"), "the RUN step outlived the cancelled build"
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tags[0])
