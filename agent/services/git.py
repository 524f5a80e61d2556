"""Application sources: clone or update a repository into ``APPS_DIR/<service_uid>``.

docs/commands.md, "Deployments" and docs/security.md ("Git"). The access token reaches git only through
``GIT_ASKPASS`` (a fixed script that prints the private variable ``PULSEUP_GIT_TOKEN`` from
its own environment): never argv, the remote URL, the git config or logs. Git runs through
:class:`GitRunner` rather than GitPython's ``Git.execute`` because the latter always starts
from a copy of ``os.environ`` (git/cmd.py, ``env = os.environ.copy()``), which would hand the
agent's own secrets to git; the runner builds a minimal environment, honours the call's
deadline and kills git on cancellation.

Git runs nothing from the work tree (docs/security.md, issue 17): the repository (git
directory) of a service lives in the agent's private ``STATE_DIR/git/repos/<uid>.git``, out of
reach of a container that bind-mounts the work tree, and every invocation names it with
``--git-dir``/``--work-tree``, so a ``.git`` planted in the work tree is never read. Its
config is written by the agent, byte for byte, and checked before each use; every git
invocation also overrides the settings that execute programs (:data:`SAFE_CONFIG`).
"""

import os
import re
import shutil
import stat
import tempfile
import uuid
from urllib.parse import urlsplit

from agent import log, proc
from agent.errors import AgentError, invalid

_log = log.get("git")

BRANCH_RE = re.compile(r"[A-Za-z0-9._/-]{1,255}")
SHA_RE = re.compile(r"[0-9a-fA-F]{7,64}")
OWNER_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")
PATH_RE = re.compile(r"/[A-Za-z0-9._~/-]{1,1000}")
TOKEN_ENV = "PULSEUP_GIT_TOKEN"
MESSAGE_MAX = 4096
STDERR_TAIL = 4096
KILL_GRACE = 5.0
ASKPASS = """#!/bin/sh
# GIT_ASKPASS helper of the PulseUp agent (docs/security.md): git runs it with the prompt as $1.
# The token lives only in this process's environment.
case "$1" in
  Username*) printf '%s\\n' "x-access-token" ;;
  *) printf '%s\\n' "$PULSEUP_GIT_TOKEN" ;;
esac
"""

# Given to every git invocation with -c: command-line config wins over every config file
# (git-config(1), FILES), so these hold even if a repository's config were tampered with.
# What cannot be overridden by name (filter.<driver>.*, url.<base>.insteadOf, include.path,
# diff.external is only read by diff commands, which the agent never runs) is kept out by
# the config check of GitService (the agent writes the whole file and compares it).
SAFE_CONFIG = (
    "core.hooksPath=/dev/null",          # no hook runs (githooks(5))
    "core.fsmonitor=false",              # no fsmonitor hook program
    "core.sshCommand=false",             # ssh is refused anyway (GIT_ALLOW_PROTOCOL)
    "core.pager=cat", "core.editor=false", "sequence.editor=false",
    "core.askPass=", "credential.helper=",   # an empty helper resets the list from config files
    "core.attributesFile=/dev/null",
    "protocol.allow=never", "protocol.file.allow=never", "protocol.ext.allow=never",
    "submodule.recurse=false", "fetch.recurseSubmodules=false",
    "gc.auto=0", "maintenance.auto=false",   # no background gc writing into the git dir
    "http.proxy=",
)
# The top level of a git directory this agent made; anything else (hooks, info/attributes,
# commondir, worktrees, a stale *.lock) means someone else wrote there.
GIT_DIR_ENTRIES = frozenset({"HEAD", "config", "index", "objects", "refs", "logs", "packed-refs",
                             "FETCH_HEAD", "ORIG_HEAD"})
CONFIG_TEMPLATE = ("[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n"
                   "[remote \"origin\"]\n\turl = {url}\n")

# stderr fragments -> error code (docs/commands.md, "Deployments": unreachable / rejected / missing)
_DENIED = ("authentication failed", "terminal prompts disabled", "could not read username",
           "could not read password", "returned error: 401", "returned error: 403",
           "permission denied")
_UNREACHABLE = ("could not resolve host", "failed to connect", "connection refused",
                "connection timed out", "operation timed out", "returned error: 50",
                "unable to access", "connection reset", "ssl certificate problem")
_MISSING = ("couldn't find remote ref", "returned error: 404", "remote branch", "not found", "not our ref",
            "unknown revision", "bad object", "no such remote ref")


def validate_branch(branch, field="github_branch"):
    """docs/commands.md, "Identifiers and values" git branch rule; raises invalid_argument."""
    if not isinstance(branch, str) or not BRANCH_RE.fullmatch(branch):
        raise invalid(field, "must be 1-255 characters of [A-Za-z0-9._/-]")
    if (".." in branch or branch.startswith(("-", "/", ".")) or branch.endswith(("/", ".lock", "."))
            or "//" in branch or "/." in branch):
        raise invalid(field, "is not a valid branch name")
    return branch


def validate_sha(sha, field="commit_sha"):
    """7-64 hex characters, returned lowercase; raises invalid_argument."""
    if not isinstance(sha, str) or not SHA_RE.fullmatch(sha):
        raise invalid(field, "must be 7-64 hex characters")
    return sha.lower()


def normalize_repo_url(value, allowed_hosts, allow_insecure=False, field="github_repo"):
    """``owner/name`` or an allowed ``https://`` URL -> the clone URL; raises invalid_argument
    (permission_denied for a plain-HTTP URL without ALLOW_INSECURE_TRANSPORT, docs/commands.md, "Errors")."""
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise invalid(field, "must be owner/name or an https:// URL")
    if any(ch in value for ch in "\r\n\t\0\\\" "):
        raise invalid(field, "must not contain whitespace, quotes or backslashes")
    if OWNER_NAME_RE.fullmatch(value) and "://" not in value:
        value = f"https://github.com/{value.removesuffix('.git')}.git"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise invalid(field, "is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise invalid(field, "must be owner/name or an https:// URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise invalid(field, "must not contain credentials")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise invalid(field, "must not contain a query or fragment")
    if not PATH_RE.fullmatch(parts.path) or "/../" in parts.path + "/" or "/./" in parts.path + "/":
        raise invalid(field, "has an invalid repository path")
    host = parts.hostname.lower()
    if not _host_allowed(host, port, parts.scheme, allowed_hosts):
        raise invalid(field, f"host {host} is not in PULSEUP_GIT_ALLOWED_HOSTS")
    if parts.scheme == "http" and not allow_insecure:
        raise AgentError("permission_denied", f"{field}: plain http:// needs ALLOW_INSECURE_TRANSPORT",
                         field=field)
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def _host_allowed(host, port, scheme, allowed_hosts):
    default = 443 if scheme == "https" else 80
    for entry in allowed_hosts:
        name, _, entry_port = entry.strip().lower().rpartition(":")
        if not name or not entry_port.isdigit():   # no port in the entry
            name, entry_port = entry.strip().lower(), None
        if name != host:
            continue
        if entry_port is None and port in (None, default):
            return True
        if entry_port is not None and int(entry_port) == (port or default):
            return True
    return False


def strip_credentials(url):
    """The URL without user-info (for remotes written by older agents)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def expected_config(repo_url):
    """The exact bytes of the config the agent writes for ``repo_url``."""
    return CONFIG_TEMPLATE.format(url=repo_url).encode()


class GitRunner:
    """Runs git with a minimal environment, a deadline and cancellation."""

    def __init__(self, cfg, askpass_path, home):
        self.cfg = cfg
        self.askpass_path = askpass_path
        self.home = home

    def environment(self, token=None):
        env = proc.environment(HOME=self.home, LANG="C", LC_ALL="C", GIT_TERMINAL_PROMPT="0")
        env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_ATTR_NOSYSTEM": "1",
                    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_LFS_SKIP_SMUDGE": "1", "GIT_NO_REPLACE_OBJECTS": "1",
                    "GIT_PAGER": "cat",
                    "GIT_ALLOW_PROTOCOL": "https:http" if self.cfg.allow_insecure_transport else "https"})
        if self.cfg.git_ca_file:  # GIT_CA_FILE: http.sslCAInfo through the environment, not argv
            env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.sslCAInfo",
                       GIT_CONFIG_VALUE_0=self.cfg.git_ca_file)
        if token:
            env.update(GIT_ASKPASS=self.askpass_path, **{TOKEN_ENV: token})
        return env

    def argv(self, args, tree=None):
        """``git`` with the repository named explicitly (no discovery) and :data:`SAFE_CONFIG`."""
        argv = ["git"]
        if tree is not None:
            argv += [f"--git-dir={tree.git_dir}", f"--work-tree={tree.work_tree}"]
        for setting in SAFE_CONFIG:
            argv += ["-c", setting]
        allowed = ("https", "http") if self.cfg.allow_insecure_transport else ("https",)
        for scheme in allowed:
            argv += ["-c", f"protocol.{scheme}.allow=always"]
        return argv + list(args)

    def run(self, args, tree=None, token=None, ctx=None, what=None, cwd=None):
        """Run ``git <args>`` in ``tree`` (a :class:`Tree`); returns stdout (str). Raises
        unavailable, permission_denied, not_found, command_failed, cancelled, deadline_exceeded."""
        if ctx is not None:
            ctx.check()
        if cwd is None and tree is not None:
            cwd = tree.work_tree
        result = proc.run(self.argv(args, tree), self.environment(token),
                          timeout=None if ctx is None else ctx.remaining(), cwd=cwd, max_output=None,
                          what=f"git {args[0]}", grace=KILL_GRACE)
        if ctx is not None:
            ctx.check()
        if result.exit_code != 0:
            raise classify(what or f"git {args[0]}", result.exit_code, result.stderr)
        return result.stdout


def classify(what, exit_code, stderr):
    """The AgentError for a failed git command, from its stderr (docs/commands.md, "Deployments")."""
    tail = log.redact(stderr[-STDERR_TAIL:]).strip()
    lower = stderr.lower()
    last = tail.splitlines()[-1] if tail else f"exit code {exit_code}"
    if any(text in lower for text in _DENIED):
        return AgentError("permission_denied", f"{what}: credentials rejected: {last}")
    if any(text in lower for text in _MISSING):
        return AgentError("not_found", f"{what}: {last}")
    if any(text in lower for text in _UNREACHABLE):
        return AgentError("unavailable", f"{what}: remote unreachable: {last}")
    return AgentError("command_failed", f"{what}: {last}", exit_code=exit_code, stderr_tail=tail)


class Tree:
    """A service's source: its private git directory and its work tree."""

    def __init__(self, git_dir, work_tree):
        self.git_dir = git_dir
        self.work_tree = work_tree


NO_CLONE = "no clone yet"


def repository_dir(cfg, service_uid):
    """The private git directory of a service (docs/security.md, "Git")."""
    return os.path.join(cfg.state_dir, "git", "repos", f"{service_uid}.git")


def untrusted_reason(tree, repo_url, uid):
    """Why ``tree`` must not be used for ``repo_url`` (a string), or None when it may.

    The checks of docs/security.md ("Git"): a git directory made by this agent for this URL,
    wholly owned by ``uid``, holding only what git writes for the agent's commands, and a work
    tree without a ``.git`` of its own."""
    if os.path.islink(tree.git_dir) or not os.path.isdir(tree.git_dir):
        return NO_CLONE
    if os.path.islink(tree.work_tree) or not os.path.isdir(tree.work_tree):
        return "the work tree is missing"
    if os.path.lexists(os.path.join(tree.work_tree, ".git")):
        return "a .git the agent did not make is in the work tree"
    try:
        with open(os.path.join(tree.git_dir, "config"), "rb") as handle:
            config = handle.read(64 * 1024)
    except OSError:
        return "the git config is unreadable"
    if config != expected_config(repo_url):
        return "the git config is not the one the agent wrote (another repository, or modified)"
    return _foreign_entry(tree.git_dir, uid)


def _foreign_entry(git_dir, uid):
    """A reason naming the first entry of ``git_dir`` the agent did not make, or None."""
    for name in os.listdir(git_dir):
        if name not in GIT_DIR_ENTRIES:
            return f"unexpected {name} in the git directory"
    if os.path.isdir(os.path.join(git_dir, "objects", "info")) and os.listdir(
            os.path.join(git_dir, "objects", "info")):
        return "objects/info (alternates) is not empty"
    for parent, dirs, files in os.walk(git_dir):
        for name in [".", *dirs, *files]:
            path = os.path.join(parent, name)
            info = os.lstat(path)
            if info.st_uid != uid:
                return f"{os.path.relpath(path, git_dir)} is owned by uid {info.st_uid}"
            if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                return f"{os.path.relpath(path, git_dir)} is not a regular file or directory"
    return None


class GitService:
    """Source checkouts under ``APPS_DIR``. :meth:`prepare` raises the codes of
    :meth:`GitRunner.run`, plus invalid_argument and failed_precondition (unwritable dirs)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.uid = os.geteuid()       # the owner of every file in a git directory we trust
        self._runner = None

    @property
    def private_dir(self):
        return os.path.join(self.cfg.state_dir, "git")

    @property
    def runner(self):
        if self._runner is None:
            home = os.path.join(self.private_dir, "home")
            try:
                os.makedirs(home, mode=0o700, exist_ok=True)
                os.makedirs(os.path.join(self.private_dir, "repos"), mode=0o700, exist_ok=True)
                askpass = os.path.join(self.private_dir, "askpass.sh")
                _write_script(askpass, ASKPASS)
            except OSError as exc:
                raise AgentError("failed_precondition",
                                 f"cannot prepare {self.private_dir}: {exc.strerror}") from exc
            self._runner = GitRunner(self.cfg, askpass, home)
        return self._runner

    def work_tree(self, service_uid):
        return os.path.join(self.cfg.apps_dir, service_uid)

    def tree(self, service_uid):
        return Tree(repository_dir(self.cfg, service_uid), self.work_tree(service_uid))

    def normalize_url(self, value, field="github_repo"):
        return normalize_repo_url(value, self.cfg.pulseup_git_allowed_hosts,
                                  self.cfg.allow_insecure_transport, field)

    def prepare(self, service_uid, repo_url, token=None, branch=None, commit_sha=None, ctx=None):
        """Clone or update the work tree and check out the requested commit.

        Returns ``{clone_path, commit_sha, commit_message, branch, fresh}``; ``fresh`` is
        True when the work tree was cloned now (the first clone, docs/commands.md, "Deployments")."""
        tree = self.tree(service_uid)
        if token:
            log.register_secret(token)
        reason = untrusted_reason(tree, repo_url, self.uid)
        if reason not in (None, NO_CLONE):
            _log.warning("discarding the source of %s and cloning afresh: %s", service_uid, reason,
                         extra={"service_uid": service_uid, "reason": reason})
        if reason is not None:
            self._fresh_clone(tree, repo_url, token, branch, commit_sha, ctx)
        else:
            self._checkout(tree, token, branch, commit_sha, ctx)
        return dict(self.describe(tree, branch, ctx), fresh=reason is not None)

    def _fresh_clone(self, tree, repo_url, token, branch, commit_sha, ctx):
        """Clone into temporary siblings and swap them in (docs/commands.md, "Deployments")."""
        runner = self.runner          # makes the private directories
        work_parent, git_parent = os.path.dirname(tree.work_tree), os.path.dirname(tree.git_dir)
        prefix = f".{os.path.basename(tree.work_tree)}.clone-"
        try:
            os.makedirs(work_parent, mode=0o750, exist_ok=True)
            tmp = Tree(tempfile.mkdtemp(prefix=prefix, dir=git_parent),
                       tempfile.mkdtemp(prefix=prefix, dir=work_parent))
            os.chmod(tmp.work_tree, 0o750)
        except OSError as exc:
            raise AgentError("failed_precondition", f"cannot write {work_parent}: {exc.strerror}") from exc
        try:
            # an empty template: no sample hooks, no info/ (git-init(1), TEMPLATE DIRECTORY)
            runner.run(["init", "-q", "--bare", "--template=", tmp.git_dir], ctx=ctx, what="git init",
                       cwd=git_parent)
            _write_file(os.path.join(tmp.git_dir, "config"), expected_config(repo_url), 0o600)
            self._checkout(tmp, token, branch, commit_sha, ctx)
            _swap_in(tmp.git_dir, tree.git_dir)
            _swap_in(tmp.work_tree, tree.work_tree)
        except BaseException:
            shutil.rmtree(tmp.git_dir, ignore_errors=True)
            shutil.rmtree(tmp.work_tree, ignore_errors=True)
            raise

    def _checkout(self, tree, token, branch, commit_sha, ctx):
        run = self.runner.run
        if commit_sha and len(commit_sha) == 40 and self._rev_parse(tree, commit_sha, ctx) == commit_sha:
            target = commit_sha     # the full commit is here already (a redeploy): no fetch
        else:
            target = self._fetch(tree, token, branch, commit_sha, ctx)
        run(["checkout", "-q", "--force", "--detach", target], tree, ctx=ctx, what="git checkout")
        run(["reset", "-q", "--hard", target], tree, ctx=ctx, what="git reset")
        run(["clean", "-ffdxq"], tree, ctx=ctx, what="git clean")
        head = run(["rev-parse", "HEAD"], tree, ctx=ctx).strip()
        if commit_sha and not head.startswith(commit_sha):
            raise AgentError("not_found", f"commit {commit_sha}: HEAD is {head} after checkout")

    def _fetch(self, tree, token, branch, commit_sha, ctx):
        """Fetch the branch (and the commit when the branch does not reach it); the target."""
        if branch is None:
            branch = self.default_branch(tree, token, ctx)
        self.runner.run(["fetch", "--prune", "--force", "--no-tags", "--no-recurse-submodules", "origin",
                         f"+refs/heads/{branch}:refs/remotes/origin/{branch}"], tree, token=token, ctx=ctx,
                        what=f"git fetch of branch {branch}")
        if commit_sha:
            return self._resolve_commit(tree, commit_sha, token, ctx)
        return f"refs/remotes/origin/{branch}"

    def _resolve_commit(self, tree, commit_sha, token, ctx):
        full = self._rev_parse(tree, commit_sha, ctx)
        if full is None and len(commit_sha) == 40:
            try:  # not reachable from the branch: ask for the object itself
                self.runner.run(["fetch", "--no-tags", "origin", commit_sha], tree, token=token,
                                ctx=ctx, what=f"git fetch of commit {commit_sha}")
            except AgentError as exc:
                if exc.code != "command_failed":
                    raise
            full = self._rev_parse(tree, commit_sha, ctx)
        if full is None:
            raise AgentError("not_found", f"commit {commit_sha} not found (or ambiguous)", field="commit_sha")
        return full

    def _rev_parse(self, tree, commit_sha, ctx):
        try:
            out = self.runner.run(["rev-parse", "--verify", "--quiet", f"{commit_sha}^{{commit}}"], tree, ctx=ctx)
        except AgentError as exc:
            if exc.code in ("cancelled", "deadline_exceeded"):
                raise
            return None
        return out.strip() or None

    def default_branch(self, tree, token, ctx):
        """The remote's default branch (``ls-remote --symref origin HEAD``); raises not_found."""
        out = self.runner.run(["ls-remote", "--symref", "origin", "HEAD"], tree, token=token, ctx=ctx,
                              what="git ls-remote")
        for line in out.splitlines():
            if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
                return validate_branch(line[len("ref: refs/heads/"):-len("\tHEAD")])
        raise AgentError("not_found", "the remote has no default branch")

    def describe(self, tree, branch=None, ctx=None):
        """``{clone_path, commit_sha, commit_message, branch}`` of the work tree's HEAD."""
        out = self.runner.run(["log", "-1", "--format=%H%x00%B", "HEAD"], tree, ctx=ctx, what="git log")
        sha, _, message = out.partition("\x00")
        return {"clone_path": tree.work_tree, "commit_sha": sha.strip(),
                "commit_message": message.strip()[:MESSAGE_MAX], "branch": branch}

    def remove(self, service_uid):
        """Delete the work tree and its git directory (purge_files); True when something was removed."""
        tree = self.tree(service_uid)
        removed = False
        for path in (tree.work_tree, tree.git_dir):
            if os.path.lexists(path):
                _remove(path)
                removed = True
        return removed


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _swap_in(tmp, path):
    """Replace ``path`` by ``tmp`` with two renames; the old tree is deleted afterwards."""
    old = None
    if os.path.lexists(path):
        old = f"{path}.old-{uuid.uuid4().hex[:8]}"
        os.rename(path, old)
    os.rename(tmp, path)
    if old is not None:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.unlink(old)


def _write_file(path, content, mode):
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def _write_script(path, content):
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == content and stat.S_IMODE(os.stat(path).st_mode) == 0o700:
                return
    except OSError:
        pass
    _write_file(path, content.encode(), 0o700)
