"""Image builds and host-wide build slots (docs/commands.md, "Operations" and "Deployments").

BuildKit when the engine and a docker CLI have it (agent/services/buildkit.py, issue 18): the
CLI runs ``docker build --progress plain`` and its lines stream to the build log. Otherwise,
or with ``DOCKER_FORCE_LEGACY_BUILDS=true``, the classic builder runs through the SDK
(``POST /build`` without BuildKit's session, the same as ``DOCKER_BUILDKIT=0``) and its JSON
progress stream is turned into lines. The first line of every build log names the builder.

Only build args the Dockerfile declares with ``ARG`` are passed: inside the API request
(classic) or through the CLI's environment (BuildKit), never on a command line; a declared
ARG whose name looks secret gets a WARN line because its value ends up in the image history.
The classic build context is tarred in gevent's thread pool (tarring blocks).
"""

import contextlib
import os
import re

import gevent
import gevent.lock

from agent import log
from agent.errors import AgentError
from agent.services.buildkit import BuildKit
from agent.services.docker import sdk
from agent.services.docker import translate

_log = log.get("build")
ARG_RE = re.compile(r"^\s*ARG\s+(.+)\Z", re.I)
ARG_NAME_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(=.*)?\Z")
SECRET_NAME = re.compile(r"token|password|passwd|secret|private|credential|api_?key|access_?key", re.I)
STDERR_TAIL = 4096


def declared_args(dockerfile_text):
    """Names declared with ``ARG`` (continuation lines joined, comments skipped)."""
    names, logical = [], ""
    for raw in dockerfile_text.splitlines():
        line = raw.rstrip()
        if not logical and line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        match = ARG_RE.match(logical)
        logical = ""
        if not match:
            continue
        for word in match.group(1).split():
            found = ARG_NAME_RE.match(word)
            if found and found.group(1) not in names:
                names.append(found.group(1))
    return names


def select_build_args(dockerfile_text, env):
    """(build args from ``env`` for declared ARGs, names that look secret)."""
    declared = declared_args(dockerfile_text)
    args = {name: env[name] for name in declared if name in env}
    return args, [name for name in args if SECRET_NAME.search(name)]


class BuildService:
    """Builds app images. Raises command_failed (build error, with ``stderr_tail``),
    unavailable, deadline_exceeded, cancelled, invalid_argument (Dockerfile missing)."""

    def __init__(self, cfg, docker):
        self.cfg = cfg
        self.docker = docker
        self._slots = gevent.lock.BoundedSemaphore(cfg.pulseup_max_parallel_builds)
        self.buildkit = BuildKit(cfg, docker)

    @contextlib.contextmanager
    def slot(self, ctx=None, on_wait=None):
        """Hold one of ``PULSEUP_MAX_PARALLEL_BUILDS`` slots; ``on_wait()`` runs if none is free."""
        if not self._slots.acquire(blocking=False):
            if on_wait is not None:
                on_wait()
            timeout = ctx.remaining() if ctx is not None else None
            if not self._slots.acquire(timeout=timeout):
                raise AgentError("deadline_exceeded", "deadline exceeded while waiting for a build slot")
        try:
            yield
        finally:
            self._slots.release()

    def build(self, context_dir, dockerfile, tags, env, on_line, ctx=None):
        """Build ``<context_dir>/<dockerfile>`` and tag it with every ``repo:tag`` of ``tags``.

        ``on_line(text, level)`` receives each output line. Returns the image id."""
        dockerfile_path = os.path.join(context_dir, dockerfile)
        try:
            with open(dockerfile_path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError as exc:
            raise AgentError("invalid_argument", f"dockerfile_path: cannot read {dockerfile}: {exc.strerror}",
                             field="dockerfile_path") from exc
        build_args, secret_names = select_build_args(text, env)
        for name in secret_names:
            on_line(f"build arg {name} looks secret: its value is recorded in the image history", "WARN")
        reason = self._classic_reason(build_args)
        if reason is None:
            on_line(f"builder: BuildKit through {self.buildkit.cli()[0]}", "INFO")
            return self.buildkit.build(context_dir, dockerfile, tags, build_args, on_line, ctx)
        on_line(f"builder: classic ({reason})", "INFO")
        return self._classic(context_dir, dockerfile, tags, build_args, on_line, ctx)

    def _classic_reason(self, build_args):
        """Why the classic builder runs, or None for BuildKit."""
        reason = self.buildkit.reason_unavailable()
        if reason is None and not self.buildkit.usable_args(build_args):
            reason = "a build arg is named like a docker CLI setting"
        return reason

    def _classic(self, context_dir, dockerfile, tags, build_args, on_line, ctx):
        context = gevent.get_hub().threadpool.apply(sdk.build_context, (context_dir, dockerfile))
        try:
            image_id = self._run(context, dockerfile, tags[0], build_args, on_line, ctx)
        finally:
            context.close()
        with translate("tag image"):
            for ref in tags[1:]:
                repository, _, tag = ref.rpartition(":")
                self.docker.api.tag(image_id, repository, tag, force=True)
        return image_id

    def _run(self, context, dockerfile, tag, build_args, on_line, ctx):
        timeout = max(60.0, ctx.remaining()) if ctx is not None and ctx.remaining() is not None else 3600.0
        with translate("docker build"):
            stream = self.docker.api.build(
                fileobj=context, custom_context=True, dockerfile=dockerfile, tag=tag, rm=True, forcerm=True,
                pull=False, buildargs=build_args, decode=True, timeout=timeout)
            try:
                return _consume(stream, on_line)
            finally:
                # cancellation kills this greenlet inside the read; closing the stream drops the
                # connection, which makes the engine abort the build
                stream.close()


def _consume(stream, on_line):
    """Feed the JSON progress messages to ``on_line``; the built image id, or command_failed."""
    image_id, pending, tail = None, "", []
    for message in stream:
        if "error" in message or "errorDetail" in message:
            detail = (message.get("errorDetail") or {}).get("message") or message.get("error") or "build failed"
            on_line(detail, "ERROR")
            tail.append(detail)
            stderr_tail = log.redact("\n".join(tail)[-STDERR_TAIL:])
            raise AgentError("command_failed", f"docker build failed: {log.redact(detail)}",
                             exit_code=(message.get("errorDetail") or {}).get("code") or 1,
                             stderr_tail=stderr_tail)
        if "aux" in message and isinstance(message["aux"], dict) and message["aux"].get("ID"):
            image_id = message["aux"]["ID"]
        text = message.get("stream") or message.get("status")
        if not text:
            continue
        pending += text if text.endswith("\n") or "stream" in message else text + "\n"
        *lines, pending = pending.split("\n")
        for line in lines:
            if line.strip():
                on_line(line, "INFO")
                tail = (tail + [line])[-50:]
                image_id = image_id or _built_id(line)
    if pending.strip():
        on_line(pending, "INFO")
        image_id = image_id or _built_id(pending)
    if image_id is None:
        raise AgentError("command_failed", "docker build finished without an image", exit_code=1,
                         stderr_tail=log.redact("\n".join(tail)[-STDERR_TAIL:]))
    return image_id


def _built_id(line):
    match = re.match(r"^Successfully built ([0-9a-f]{12,64})\s*\Z", line)
    return match.group(1) if match else None
