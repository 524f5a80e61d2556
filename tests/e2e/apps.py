"""Apps the e2e tests deploy: repositories on the token git server and deploy requests."""

import secrets
import time

import requests

# Each container prints "<tag> <n>" ten times a second (the log stream tests count them),
# serves /www on 8080, and exits on SIGTERM (busybox httpd as PID 1 would ignore it and make
# every replaced version wait out the 30 s stop grace).
LOGGING_DOCKERFILE = """\
FROM pulseup-test/appbase:latest
COPY index.html /www/index.html
COPY tag /tag
EXPOSE 8080
CMD ["sh", "-c", "trap 'exit 0' TERM; (i=0; while true; do i=$((i+1)); echo \\"$(cat /tag) $i\\"; sleep 0.1; done) & %shttpd -f -p 8080 -h /www & wait"]
"""


def unique(prefix):
    return f"{prefix}-{secrets.token_hex(3)}"


def app_files(tag, delay=0):
    """Files of a release whose page and log lines say ``tag``; ``delay`` s before it listens."""
    wait = f"sleep {delay}; " if delay else ""
    return {"Dockerfile": LOGGING_DOCKERFILE % wait, "index.html": f"{tag}\n", "tag": f"{tag}\n"}


def deploy_request(git, uid, deployment_uid, sha, **extra):
    data = {"service_uid": uid, "deployment_uid": deployment_uid, "github_repo": f"{git.base_url}/{uid}.git",
            "access_token": git.token, "github_branch": "main", "commit_sha": sha, "internal_port": 8080,
            "drain_seconds": 1, "health_timeout_seconds": 60, "env_vars": {"GREETING": "hello"}}
    data.update(extra)
    return data


def proxy_get(env, host, timeout=5.0):
    """(status, body) of plain HTTP with ``Host`` through the agent's Caddy."""
    # a fresh connection each time: Caddy closes idle keep-alive connections when a new
    # config is loaded, and a pooled one would then fail the next request
    with requests.Session() as session:
        session.trust_env = False
        response = session.get(f"http://127.0.0.1:{env['CADDY_HTTP_PORT']}/", timeout=timeout,
                               headers={"Host": host, "Connection": "close"}, allow_redirects=False)
        return response.status_code, response.text


def wait_body(env, host, expected, timeout=30.0):
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = proxy_get(env, host)
            if last == (200, expected):
                return
        except requests.RequestException as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise AssertionError(f"{host} did not serve {expected!r}; last: {last!r}")


def service_containers(client, uid):
    return sorted(c.name for c in client.containers.list(all=True, filters={"label": f"pulseup.service_uid={uid}"}))
