"""Build service: host-wide slots and the parsing of the engine's build progress stream."""
import os
import time

import gevent
import pytest

from agent import config
from agent.errors import AgentError
from agent.services.context import CallContext
from agent.services.build import BuildService, _consume


def _service(slots):
    return BuildService(config.defaults().replace(pulseup_max_parallel_builds=slots), docker=None)


def test_slots_are_shared_and_waiters_are_told():
    build = _service(1)
    order, waited = [], []

    def job(name, hold):
        with build.slot(on_wait=lambda: waited.append(name)):
            order.append(f"{name}+")
            gevent.sleep(hold)
            order.append(f"{name}-")

    first = gevent.spawn(job, "a", 0.1)
    gevent.sleep(0)
    second = gevent.spawn(job, "b", 0)
    gevent.joinall([first, second], timeout=5)
    assert order == ["a+", "a-", "b+", "b-"] and waited == ["b"]


def test_waiting_for_a_slot_respects_the_deadline():
    build = _service(1)
    with build.slot():
        ctx = CallContext(None, "service.app.deploy", deadline=time.monotonic() + 0.05)
        with pytest.raises(AgentError) as info:
            with build.slot(ctx):
                pass
    assert info.value.code == "deadline_exceeded"
    with build.slot():          # the slot was released
        pass


def test_progress_lines_and_image_id():
    lines = []
    stream = [{"stream": "Step 1/2 : FROM base\n"}, {"stream": " ---> abc\nStep 2/2 : "},
              {"stream": "CMD x\n"}, {"aux": {"ID": "sha256:" + "f" * 64}}, {"stream": "Successfully built ffff\n"}]
    assert _consume(iter(stream), lambda text, level: lines.append((level, text))) == "sha256:" + "f" * 64
    assert [text for _, text in lines] == ["Step 1/2 : FROM base", " ---> abc", "Step 2/2 : CMD x",
                                           "Successfully built ffff"]
    assert _consume(iter([{"stream": "Successfully built 0123456789ab\n"}]), lambda *a: None) == "0123456789ab"


def test_build_error_is_command_failed_with_a_tail():
    stream = [{"stream": "Step 1/2 : RUN false\n"},
              {"errorDetail": {"code": 1, "message": "The command '/bin/sh -c false' returned a non-zero code: 1"},
               "error": "The command '/bin/sh -c false' returned a non-zero code: 1"}]
    with pytest.raises(AgentError) as info:
        _consume(iter(stream), lambda *a: None)
    error = info.value
    assert error.code == "command_failed" and error.details["exit_code"] == 1
    assert "RUN false" in error.details["stderr_tail"] and "non-zero code" in error.message


def test_a_stream_without_an_image_fails():
    with pytest.raises(AgentError) as info:
        _consume(iter([{"stream": "nothing\n"}]), lambda *a: None)
    assert info.value.code == "command_failed"


# -- BuildKit or classic (agent/services/buildkit.py) ------------------------------------------

class _Networks:
    def __init__(self, names):
        self.names = names

    def list(self, names=()):
        return [type("Net", (), {"name": n})() for n in self.names if n in names]


class _Docker:
    """What BuildKit asks the engine: its API version and whether `bridge` exists."""
    def __init__(self, api="1.41", networks=("bridge",)):
        self.api = type("Api", (), {"version": lambda _self: {"ApiVersion": api}})()
        self.client = type("Client", (), {"networks": _Networks(networks)})()


def _fake_clis(tmp_path, *names):
    """Directories each holding an executable `docker`; a symlink dir repeats the first."""
    dirs = []
    for name in names:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "docker").write_text("#!/bin/sh\nexit 1\n")
        (folder / "docker").chmod(0o755)
        dirs.append(str(folder))
    alias = tmp_path / "alias"
    alias.mkdir()
    (alias / "docker").symlink_to(tmp_path / names[0] / "docker")
    return ":".join(dirs[:1] + [str(alias)] + dirs[1:])


def _buildkit(tmp_path, answers, cfg=None, **docker):
    """answers: {(cli dir name, first arg): stdout or None}."""
    from agent.services.buildkit import BuildKit
    path = _fake_clis(tmp_path, "new", "old")
    probed = []

    def probe(argv):
        probed.append(argv)
        return answers.get((os.path.basename(os.path.dirname(argv[0])), argv[1]))
    kit = BuildKit(cfg or config.defaults(), _Docker(**docker), search_path=path, probe=probe)
    return kit, probed


def test_the_first_cli_with_buildkit_is_chosen(tmp_path):
    # a 28.x client without buildx cannot (it asks for the plugin); Debian's 20.10 can
    kit, probed = _buildkit(tmp_path, {("new", "version"): "28.2.2\n", ("old", "version"): "20.10.24+dfsg1\n"})
    assert kit.reason_unavailable() is None
    assert kit.cli() == (str(tmp_path / "old" / "docker"), "builtin")
    assert [a[0] for a in probed].count(str(tmp_path / "new" / "docker")) == 2   # the symlink is not probed again
    kit.reason_unavailable()
    assert len(probed) == 4                                                        # decided once


def test_a_buildx_plugin_counts(tmp_path):
    kit, _ = _buildkit(tmp_path, {("new", "buildx"): "github.com/docker/buildx v0.14\n"})
    assert kit.cli() == (str(tmp_path / "new" / "docker"), "buildx")


@pytest.mark.parametrize("answers, cfg, api, reason", [
    ({("old", "version"): "20.10.24"}, {"docker_force_legacy_builds": True}, "1.41", "DOCKER_FORCE_LEGACY_BUILDS=true"),
    ({("old", "version"): "20.10.24"}, {}, "1.38", "API 1.38"),
    ({("new", "version"): "28.2.2", ("old", "version"): None}, {}, "1.41", "no docker CLI with BuildKit"),
])
def test_reasons_for_the_classic_builder(tmp_path, answers, cfg, api, reason):
    kit, _ = _buildkit(tmp_path, answers, config.defaults().replace(**cfg), api=api)
    assert reason in kit.reason_unavailable()


def test_build_arg_values_never_reach_argv(tmp_path):
    kit, _ = _buildkit(tmp_path, {("old", "version"): "20.10.24"}, networks=())
    argv = kit.argv("/ctx", "sub/Dockerfile", ["a:1", "b:2"], {"TOKEN": "s3cret", "MODE": "x"}, "/w/iid")
    assert "s3cret" not in " ".join(argv) and "x" not in argv
    assert argv[1:] == ["build", "--progress", "plain", "--iidfile", "/w/iid", "--file", "/ctx/sub/Dockerfile",
                        "--tag", "a:1", "--tag", "b:2", "--build-arg", "MODE", "--build-arg", "TOKEN",
                        "--network", "none", "/ctx"]                # no bridge network on this engine
    kit.docker = _Docker(networks=("bridge",))
    assert "--network" not in kit.argv("/ctx", "Dockerfile", ["a:1"], {}, "/w/iid")


@pytest.mark.parametrize("name, usable", [("PATH", False), ("DOCKER_HOST", False), ("BUILDKIT_PROGRESS", False),
                                          ("HOME", False), ("https_proxy", False), ("NODE_ENV", True),
                                          ("DOCKERISH", True)])
def test_build_args_named_like_cli_settings_go_to_the_classic_builder(name, usable):
    from agent.services.buildkit import BuildKit
    assert BuildKit(config.defaults(), None).usable_args({name: "v"}) is usable
