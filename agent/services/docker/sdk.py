"""docker-py's builders the agent uses outside a plain API call: the bounded log settings of
every container it creates, and a build context made the way ``APIClient.build`` makes it."""

import os

# json-file logs of every container the agent creates stay within 3 x 10 MB
LOG_OPTIONS = {"max-size": "10m", "max-file": "3"}


def bounded_logs():
    """The LogConfig of an agent-created container (json-file, rotated)."""
    from docker.types import LogConfig

    return LogConfig(type="json-file", config=dict(LOG_OPTIONS))


def build_context(context_dir, dockerfile):
    """The build context tar (a file object) of ``context_dir`` with ``.dockerignore`` honoured,
    as docker-py's ``APIClient.build`` makes it."""
    from docker import utils
    from docker.api.build import process_dockerfile

    exclude = None
    ignore = os.path.join(context_dir, ".dockerignore")
    if os.path.exists(ignore):
        with open(ignore, encoding="utf-8", errors="replace") as handle:
            exclude = [line.strip() for line in handle.read().splitlines()
                       if line.strip() and not line.strip().startswith("#")]
    return utils.tar(context_dir, exclude=exclude, dockerfile=process_dockerfile(dockerfile, context_dir))
