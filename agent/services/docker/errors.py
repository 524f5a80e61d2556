"""The one translation of Docker's failures to AgentError.

Docker's exceptions (docker-py, requests, the socket) become :class:`AgentError` here and
nowhere else (a test keeps ``docker.errors`` inside this package): :func:`translate` wraps a
block of engine calls, after docker-py's own ``create_api_error_from_http_exception``.
"""

import contextlib

from agent.errors import AgentError

def map_error(exc, what="docker"):
    """The AgentError for a docker-py / requests exception (see module docstring)."""
    import docker.errors
    import requests.exceptions

    if isinstance(exc, docker.errors.NotFound):
        return AgentError("not_found", f"{what}: {exc.explanation or 'not found'}")
    if isinstance(exc, docker.errors.APIError):
        status, text = exc.status_code or 500, exc.explanation or str(exc)
        if status == 409:
            return AgentError("conflict", f"{what}: {text}")
        if status in (401, 403):
            return AgentError("permission_denied", f"{what}: {text}")
        if 400 <= status < 500:    # the engine refused the request as given
            return AgentError("invalid_argument", f"{what}: {text}")
        return AgentError("internal", f"internal error: {what}: {text}")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        ConnectionError, FileNotFoundError)) or _is_connect_failure(exc):
        return AgentError("unavailable", f"docker daemon unreachable: {exc}")
    return AgentError("internal", f"internal error: {what}: {exc}")


def api_error(http_error):
    """docker-py's own APIError (NotFound, ...) for the requests HTTPError of a raw engine call."""
    import docker.errors

    try:
        docker.errors.create_api_error_from_http_exception(http_error)
    except docker.errors.APIError as exc:
        return exc
    return docker.errors.APIError(str(http_error))


def _is_connect_failure(exc):
    # docker-py wraps a failed version probe in a bare DockerException (api/client.py).
    import docker.errors
    return isinstance(exc, docker.errors.DockerException) and "fetching server API version" in str(exc)


@contextlib.contextmanager
def translate(what="docker"):
    """Run a block of Docker calls; raise the matching AgentError for any Docker failure."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except AgentError:
        raise
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise map_error(exc, what) from exc


def image_present(api, image, what=None):
    """True when the engine has ``image`` (low-level ``api`` client); other failures raise
    the translated AgentError."""
    try:
        with translate(what or f"inspect image {image}"):
            api.inspect_image(image)
        return True
    except AgentError as exc:
        if exc.code == "not_found":
            return False
        raise


def inspect_or_none(api, name, what=None):
    """The container's inspect dict, or None when it does not exist; raises AgentError."""
    try:
        with translate(what or f"inspect container {name}"):
            return api.inspect_container(name)
    except AgentError as exc:
        if exc.code == "not_found":
            return None
        raise
