"""A private Docker engine for one test session (docs/hosts.md, "Docker engine").

Nothing listens on /var/run/docker.sock on the test machines and other developers run suites
in parallel, so each session starts its own dockerd with its own socket, data-root, exec-root
and address pool, and removes all of it afterwards.
"""
import os
import shutil
import signal
import subprocess
import time

import psutil

from .process import ManagedProcess, ServiceError, make_tempdir, search_path, wait_until

START_TIMEOUT = 60
STOP_TIMEOUT = 30


def storage_driver():
    """overlay2 is ~10x faster to start containers; vfs only when the kernel lacks overlay."""
    with open("/proc/filesystems") as f:
        has_overlay = any(line.split()[-1] == "overlay" for line in f if line.strip())
    return "overlay2" if has_overlay else "vfs"


def address_pool(pid=None):
    """A /16 for user-defined networks, different between parallel sessions.

    Two engines handing out the same subnets would create clashing bridge routes. The base is
    derived from our pid (172.20-29.x) and moves on past any /16 already routed on the host.
    """
    pid = os.getpid() if pid is None else pid
    routed = _routed_172_octets()
    for step in range(10):
        octet = 20 + (pid + step) % 10
        if octet not in routed:
            break
    return f"base=172.{octet}.0.0/16,size=24"


def _routed_172_octets():
    try:
        out = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    octets = set()
    for line in out.splitlines():
        parts = line.split()[0].split(".") if line.strip() else []
        if len(parts) >= 2 and parts[0] == "172" and parts[1].isdigit():
            octets.add(int(parts[1]))
    return octets


class DockerDaemon:
    def __init__(self):
        self.dir = None
        self.process = None
        self.driver = storage_driver()

    @property
    def socket_path(self):
        return os.path.join(self.dir, "docker.sock")

    @property
    def host(self):
        return f"unix://{self.socket_path}"

    def argv(self):
        d = self.dir
        return ["dockerd", f"--storage-driver={self.driver}",
                "--iptables=false", "--ip-masq=false", "--bridge=none",
                f"--default-address-pool={address_pool()}",
                f"--data-root={d}/data", f"--exec-root={d}/exec",
                f"--pidfile={d}/dockerd.pid", "-H", self.host]

    def start(self):
        # "docker" and a short random suffix keep socket paths well under the 107-byte limit.
        self.dir = make_tempdir("docker")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["PATH"] = search_path()  # dockerd looks up containerd, runc, docker-proxy there
        self.process = ManagedProcess("dockerd", self.argv(), os.path.join(self.dir, "dockerd.log"),
                                      env=env, cwd=self.dir)
        try:
            self.process.start()
            wait_until(self._ping, "dockerd to answer /_ping", timeout=START_TIMEOUT,
                       process=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def _ping(self):
        import docker  # heavy import, only once the engine is being used

        client = docker.DockerClient(base_url=self.host, timeout=5)
        try:
            return client.ping()
        finally:
            client.close()

    def stop(self):
        if self.dir is None:
            return
        if self.process is not None and self.process.alive():
            self._remove_containers()
            self.process.stop(signal.SIGTERM, timeout=STOP_TIMEOUT)
        release_dir(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def _remove_containers(self):
        import docker

        try:
            client = docker.DockerClient(base_url=self.host, timeout=60)
            for container in client.containers.list(all=True):
                container.remove(force=True, v=True)
            client.close()
        except Exception as e:  # teardown goes on: SIGTERM stops whatever is left
            print(f"dockerd teardown: removing containers failed: {e!r}")


def release_dir(path):
    """Make `path` deletable: end the engine's helpers there and unmount what they left."""
    _kill_processes_under(path)
    _unmount_under(path)


def _kill_processes_under(path):
    """SIGKILL what dockerd spawned that still names our dir (managed containerd, shims)."""
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(path in arg for arg in cmdline) and proc.pid != os.getpid():
            try:
                proc.kill()
            except psutil.Error:
                pass


def _unmount_under(path):
    """Lazily unmount leftovers (netns bind mounts, overlay merged dirs) deepest first."""
    prefix = path.rstrip("/") + "/"
    for _ in range(3):
        mounts = [m for m in _mountpoints() if m.startswith(prefix)]
        if not mounts:
            return
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)
        time.sleep(0.1)
    left = [m for m in _mountpoints() if m.startswith(prefix)]
    if left:
        raise ServiceError(f"could not unmount under {path}: {left}")


def _mountpoints():
    with open("/proc/self/mountinfo") as f:
        # Field 5 is the mount point; spaces in it are octal-escaped.
        return [line.split()[4].replace("\\040", " ") for line in f]
