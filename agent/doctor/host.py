"""Doctor checks of the processes and engines on this host: the supervisor socket, the
worker's last report, the Docker engine and the managed Caddy proxy."""

import grp
import json
import os
import socket
import stat
import time
import uuid

from agent.doctor.report import failed, passed, skipped
from agent.errors import AgentError
from agent.protocol import ipc

TIMEOUT = 5.0
# The supervisor's read-only status op (agent/supervisor/ops.py); a supervisor from before it
# existed answers `unknown_op`, which still shows a live supervisor speaking the IPC protocol.
STATUS_OP = ipc.OP_SUPERVISOR_STATUS
SUPERVISOR_HINT = ("start it: `systemctl start pulseup-supervisor` (or `pulseup-agent run`); "
                   "its log is `journalctl -u pulseup-supervisor`")


def check_supervisor(findings):
    path = findings.cfg.supervisor_socket
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return failed("supervisor", f"no socket at {path}: the supervisor is not running", SUPERVISOR_HINT)
    except OSError as exc:
        return failed("supervisor", f"cannot look at {path}: {exc.strerror}", "run the doctor as root")
    if not stat.S_ISSOCK(info.st_mode):
        return failed("supervisor", f"{path} is not a socket", f"remove {path} and restart the supervisor")
    problem = _mode_problem(findings.cfg, path, info)
    if problem:
        return failed("supervisor", problem, "restart the supervisor: it recreates the socket root:WORKER_GROUP 0660 "
                      "in a 0750 directory")
    try:
        answer = _ask(path)
    except _NoAnswer as exc:
        return failed("supervisor", f"{path}: {exc.detail}", exc.hint)
    return passed("supervisor", f"{path} (mode {stat.S_IMODE(info.st_mode):04o}) answers the IPC protocol: {answer}")


def _mode_problem(cfg, path, info):
    if info.st_mode & 0o007:
        return f"{path} is accessible to every user (mode {stat.S_IMODE(info.st_mode):04o})"
    parent = os.stat(os.path.dirname(path))
    if parent.st_mode & 0o002:
        return f"{os.path.dirname(path)} is writable by every user"
    if os.geteuid() == 0:
        try:
            gid = grp.getgrnam(cfg.worker_group).gr_gid
        except KeyError:
            return None
        if info.st_gid != gid:
            return f"{path} belongs to group {info.st_gid}, not WORKER_GROUP {cfg.worker_group} ({gid})"
    return None


class _NoAnswer(Exception):
    def __init__(self, detail, hint):
        super().__init__(detail)
        self.detail, self.hint = detail, hint


def _ask(path):
    """A short description of the supervisor's reply to STATUS_OP; raises _NoAnswer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise _NoAnswer(f"nobody listens ({exc.strerror}): a stale socket, the supervisor is not running",
                            SUPERVISOR_HINT) from None
        try:
            sock.sendall(ipc.encode({"id": uuid.uuid4().hex, "op": STATUS_OP, "args": {}, "timeout": TIMEOUT}))
            reply = _read_reply(sock)
        except (OSError, ipc.FrameError) as exc:
            raise _NoAnswer(f"no valid reply: {exc}", SUPERVISOR_HINT) from None
    finally:
        sock.close()
    if reply is None:
        raise _NoAnswer(f"the supervisor closed the connection without answering (this process runs as uid "
                        f"{os.geteuid()}, which it refuses)", "run the doctor as root or as WORKER_USER")
    if reply["ok"]:
        return "status " + json.dumps(reply["result"], sort_keys=True)[:200]
    # any refusal is still a well-formed answer from a live supervisor
    return f"alive ({(reply['error'] or {}).get('code')} for the read-only probe {STATUS_OP})"


def _read_reply(sock):
    header = ipc.recv_exact(sock, 4)
    if header is None:
        return None
    return ipc.load_reply(ipc.decode(ipc.recv_exact(sock, ipc.body_length(header)) or b""))


def check_worker(findings):
    """The worker reports to the supervisor when it connects (agent/supervisor/update.py)."""
    path = os.path.join(os.path.dirname(findings.cfg.supervisor_socket), "worker-status.json")
    if not findings.ok("supervisor"):
        return skipped("worker", "the supervisor does not answer (see supervisor)")
    try:
        with open(path, encoding="utf-8") as handle:
            status = json.loads(handle.read(64 * 1024))
    except FileNotFoundError:
        return failed("worker", "the worker has not reported to the supervisor since it started",
                      "the worker is not running or cannot connect: `journalctl -u pulseup-worker`")
    except (OSError, ValueError) as exc:
        return failed("worker", f"cannot read {path}: {exc}", "run the doctor as root")
    if not isinstance(status, dict) or status.get("connected") is not True:
        return failed("worker", f"last report: not connected ({path})", "look at `journalctl -u pulseup-worker`")
    at = status.get("at")
    age = f"{time.time() - at:.0f} s ago" if isinstance(at, (int, float)) else "at an unknown time"
    return passed("worker", f"connected, version {status.get('version', '?')} (reported {age})")


def check_docker(findings):
    from agent.services.docker import DockerService

    cfg = findings.cfg
    where = cfg.docker_host or "the default socket (unix:///var/run/docker.sock)"
    service = DockerService(cfg)
    try:
        with _translated():
            version, info = service.client.version(), service.client.info()
    except AgentError as exc:
        return failed("docker", f"cannot reach Docker at {where}: {exc.message}",
                      "start the engine (`systemctl start docker`), check DOCKER_HOST, and that WORKER_USER "
                      "is in the docker group")
    finally:
        service.close()
    return passed("docker", f"Docker {version.get('Version', '?')} (API {version.get('ApiVersion', '?')}) at {where}; "
                  f"storage driver {info.get('Driver', '?')}; {info.get('ContainersRunning', '?')} containers running")


def _translated():
    from agent.services.docker import translate
    return translate("docker")


def check_caddy(findings):
    from agent.services.caddy.admin import AdminClient
    from agent.services.caddy.container import NAME, ProxyContainer

    cfg = findings.cfg
    socket_path = ProxyContainer(cfg, None, os.path.join(cfg.state_dir, "caddy")).socket_path
    if not findings.ok("docker"):
        return skipped("caddy", "Docker is not reachable (see docker)")
    state = _container_state(cfg, NAME)
    if state is None:
        return passed("caddy", f"no {NAME} container yet: the agent creates it with the first domain or deploy")
    if state != "running":
        return failed("caddy", f"{NAME} is {state}", f"look at `docker logs {NAME}`; the agent restarts it on "
                      "its next proxy change, or start it: `docker start " + NAME + "`")
    if not AdminClient(socket_path, timeout=TIMEOUT).ready(timeout=TIMEOUT):
        return failed("caddy", f"{NAME} runs but its admin API at {socket_path} does not answer",
                      f"look at `docker logs {NAME}`; restart it: `docker restart {NAME}`")
    return passed("caddy", f"{NAME} running; admin API answers at {socket_path}")


def _container_state(cfg, name):
    from agent.services.docker import DockerService, state_of

    service = DockerService(cfg)
    try:
        container = service.find_container(name)
        return None if container is None else state_of(container)
    finally:
        service.close()


CHECKS = [("supervisor", check_supervisor), ("worker", check_worker), ("docker", check_docker),
          ("caddy", check_caddy)]
