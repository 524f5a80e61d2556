"""Parent side of the test git server: seeded bare repos served by git_http.py."""
import os
import secrets
import shutil
import sys

from .process import ManagedProcess, make_tempdir, port_open, run, wait_until

START_TIMEOUT = 30
SERVER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "git_http.py")

APP_DOCKERFILE = """\
FROM pulseup-test/appbase:latest
COPY index.html /www/index.html
EXPOSE 8080
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
"""
APP_INDEX = "hello from pulseup\n"
APP_FILES = {"Dockerfile": APP_DOCKERFILE, "index.html": APP_INDEX}

# A fixed identity and no user/system config: commits do not depend on the machine.
_GIT_IDENTITY = {"GIT_AUTHOR_NAME": "PulseUp Tests", "GIT_AUTHOR_EMAIL": "tests@pulseup.test",
                 "GIT_COMMITTER_NAME": "PulseUp Tests",
                 "GIT_COMMITTER_EMAIL": "tests@pulseup.test"}

ASKPASS_SCRIPT = """\
#!/bin/sh
# GIT_ASKPASS for tests: git calls it with the prompt text as $1.
case "$1" in
  Username*) echo "${PULSEUP_IT_GIT_USERNAME:-git}" ;;
  *) echo "$PULSEUP_IT_GIT_PASSWORD" ;;
esac
"""


class GitServer:
    """Attributes: base_url, token, repo_url, repo_path, commit_sha, root, askpass.

    add_repo(name, files, branch="main") -> (url, sha) creates another seeded bare repo;
    commit(name, files, branch="main") -> sha adds a commit to an existing one.
    """

    def __init__(self):
        self.dir = None
        self.process = None
        self.token = secrets.token_hex(16)
        self.port = None
        self.repo_url = self.repo_path = self.commit_sha = None

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def root(self):
        return os.path.join(self.dir, "repos")

    @property
    def askpass(self):
        return os.path.join(self.dir, "askpass.sh")

    def start(self):
        self.dir = make_tempdir("git")
        os.chmod(self.dir, 0o755)  # askpass.sh must run for tests that clone as another user
        for sub in ("repos", "src", "home"):
            os.makedirs(os.path.join(self.dir, sub))
        self._write_askpass()
        port_file = os.path.join(self.dir, "port")
        env = dict(os.environ, PULSEUP_IT_GIT_TOKEN=self.token)
        self.process = ManagedProcess(
            "git-http", [sys.executable, SERVER_SCRIPT, self.root, port_file],
            os.path.join(self.dir, "git-http.log"), env=env, cwd=self.dir)
        try:
            self.process.start()
            self.port = int(wait_until(lambda: _read(port_file), "git server port file",
                                       timeout=START_TIMEOUT, process=self.process))
            wait_until(lambda: port_open(self.port), "git server to accept",
                       timeout=START_TIMEOUT, process=self.process)
            self.repo_url, self.commit_sha = self.add_repo("app.git", APP_FILES)
            self.repo_path = self.bare_path("app.git")
        except BaseException:
            self.stop()
            raise
        return self

    def _write_askpass(self):
        with open(self.askpass, "w") as f:
            f.write(ASKPASS_SCRIPT)
        os.chmod(self.askpass, 0o755)

    def clone_env(self, password=None, base=None):
        """Environment for a plain `git clone`: credentials through GIT_ASKPASS, never a
        prompt (a missing credential would otherwise hang, docs/hosts.md, "git")."""
        env = dict(os.environ if base is None else base)
        env.update(GIT_ASKPASS=self.askpass, GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1",
                   PULSEUP_IT_GIT_PASSWORD=self.token if password is None else password)
        env.pop("SSH_ASKPASS", None)
        return env

    @staticmethod
    def _repo_name(name):
        return name if name.endswith(".git") else name + ".git"

    def bare_path(self, name):
        return os.path.join(self.root, self._repo_name(name))

    def add_repo(self, name, files, branch="main"):
        """Create bare repo `name` (".git" appended if missing) with one commit of `files`
        ({path: str | bytes}) on `branch`. Returns (clone url, commit sha)."""
        name = self._repo_name(name)
        bare, src = self.bare_path(name), os.path.join(self.dir, "src", name)
        if os.path.exists(bare):
            raise ValueError(f"repo {name} exists; use commit() to add to it")
        self._git("init", "-q", "--bare", "-b", branch, bare)
        self._git("init", "-q", "-b", branch, src)
        return f"{self.base_url}/{name}", self.commit(name, files, branch)

    def commit(self, name, files, branch="main", message="test commit"):
        """Write `files` over the repo's work tree on `branch`, commit, push to the served
        bare repo. Returns the new commit sha. Files not named stay as they were."""
        src = os.path.join(self.dir, "src", self._repo_name(name))
        current = self._git("-C", src, "symbolic-ref", "--short", "HEAD").stdout.decode().strip()
        if current != branch:  # `checkout -B` fails on the unborn branch of a new repo
            self._git("-C", src, "checkout", "-q", "-B", branch)
        for path, content in files.items():
            _write_file(os.path.join(src, path), content)
        self._git("-C", src, "add", "-A")
        self._git("-C", src, "commit", "-q", "--allow-empty", "-m", message)
        self._git("-C", src, "push", "-q", "--force", self.bare_path(name), f"{branch}:{branch}")
        return self._git("-C", src, "rev-parse", "HEAD").stdout.decode().strip()

    def _git(self, *args):
        env = dict(os.environ, HOME=os.path.join(self.dir, "home"), GIT_CONFIG_NOSYSTEM="1",
                   **_GIT_IDENTITY)
        return run(["git", *args], what="git " + args[0], env=env)

    def stop(self):
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _write_file(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    with open(path, "wb") as f:
        f.write(data)
