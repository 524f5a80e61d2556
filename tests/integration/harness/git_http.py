"""Smart-HTTP git server for the tests: a gevent WSGI app around `git http-backend` (CGI).

Run as its own process (tests may not monkey-patch, this process does):
    python git_http.py PROJECT_ROOT PORT_FILE
with the token in the environment variable PULSEUP_IT_GIT_TOKEN. It binds 127.0.0.1 on a
port the kernel picks and writes that port to PORT_FILE. Requests must carry HTTP Basic auth
whose password (any username) is the token, or `Authorization: Bearer <token>`; others get
401 with a Basic challenge, as git hosting services answer, so git asks its credential helpers.
"""
from gevent import monkey

monkey.patch_all()

import base64  # noqa: E402 (after patching, per gevent's rule)
import hmac  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

# Run as a script: the checkout's agent package, whichever copy the parent tests import.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))
from agent.devserver.http import parse_cgi_output  # noqa: E402

TOKEN_ENV = "PULSEUP_IT_GIT_TOKEN"
CGI_VARS = ("REQUEST_METHOD", "QUERY_STRING", "PATH_INFO", "CONTENT_TYPE", "REMOTE_ADDR",
            "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL")


def authorized_user(header, token):
    """The user name a valid Authorization header carries, or None."""
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return "bearer" if hmac.compare_digest(value.strip().encode(), token.encode()) else None
    if scheme != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value.strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user or "git") if hmac.compare_digest(password.encode(), token.encode()) else None


def cgi_environment(environ, user, body_length, project_root):
    env = {k: v for k, v in environ.items() if k.startswith("HTTP_") and isinstance(v, str)}
    env.update({k: environ.get(k, "") for k in CGI_VARS})
    env.update(
        GATEWAY_INTERFACE="CGI/1.1", CONTENT_LENGTH=str(body_length), REMOTE_USER=user,
        GIT_PROJECT_ROOT=project_root, GIT_HTTP_EXPORT_ALL="1",
        PATH=os.environ.get("PATH", "/usr/bin:/bin"), HOME=project_root,
        GIT_CONFIG_NOSYSTEM="1")
    return env


def make_app(project_root, token):
    def app(environ, start_response):
        user = authorized_user(environ.get("HTTP_AUTHORIZATION", ""), token)
        if user is None:
            start_response("401 Unauthorized", [
                ("WWW-Authenticate", 'Basic realm="git"'), ("Content-Type", "text/plain")])
            return [b"authentication required\n"]
        # Test repos are small: buffering the request and the response keeps this simple.
        # wsgi.input decodes chunked uploads; http-backend gunzips by HTTP_CONTENT_ENCODING.
        body = environ["wsgi.input"].read()
        proc = subprocess.run(["git", "http-backend"], input=body, capture_output=True,
                              env=cgi_environment(environ, user, len(body), project_root))
        if proc.stderr:
            sys.stderr.write(proc.stderr.decode("utf-8", "replace"))
        status, headers, payload = parse_cgi_output(proc.stdout)
        start_response(status, headers)
        return [payload]

    return app


def main(project_root, port_file):
    server = WSGIServer(("127.0.0.1", 0), make_app(project_root, os.environ[TOKEN_ENV]),
                        log=sys.stderr, error_log=sys.stderr)
    server.start()
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_port))
    os.rename(tmp, port_file)  # atomic: the parent never reads a half-written port
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
