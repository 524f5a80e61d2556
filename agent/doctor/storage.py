"""Doctor checks of what the agent keeps on disk: free space and writability of STATE_DIR
and the backup directory, and the outbox backlog (read from its journal, never rewritten)."""

import json
import os
import pwd

from agent.doctor.report import failed, passed

MIN_FREE_BYTES = 100 * 1024**2
MIN_FREE_RATIO = 0.02
BACKLOG_RATIO = 0.8
OUTBOX_JOURNAL = "outbox.journal"


def _mib(count):
    return f"{count / 1024**2:.0f} MiB"


def disk_check(name, setting, path_of):
    def check(findings):
        return _disk(findings.cfg, name, setting, path_of(findings.cfg))
    return check


def _disk(cfg, name, setting, path):
    target = path
    while not os.path.isdir(target) and target != "/":
        target = os.path.dirname(target)
    created = "" if target == path else f" (does not exist yet; created under {target})"
    usage = os.statvfs(target)
    free, total = usage.f_bavail * usage.f_frsize, usage.f_blocks * usage.f_frsize
    shown = f"{path}{created}: {_mib(free)} free of {_mib(total)}"
    if free < MIN_FREE_BYTES or (total and free / total < MIN_FREE_RATIO):
        return failed(name, f"{shown} (less than {_mib(MIN_FREE_BYTES)} or {MIN_FREE_RATIO:.0%})",
                      f"free space on the file system of {setting}: old backups, images (`docker system prune`), logs")
    problem = _probe_write(target) or _worker_access(cfg, target)
    if problem and _someone_else(cfg):
        return failed(name, f"{path}: {problem} (as {pwd.getpwuid(os.geteuid()).pw_name})",
                      f"run the doctor as root or as WORKER_USER {cfg.worker_user} to judge the worker's access")
    if problem:
        return failed(name, f"{path}: {problem}", f"make {setting} writable by WORKER_USER {cfg.worker_user} "
                      f"(`chown {cfg.worker_user} {target}`), and check the file system is not mounted read-only")
    return passed(name, shown + "; writable")


def _probe_write(directory):
    """None, or why a small file cannot be created, written and synced in ``directory``."""
    probe = os.path.join(directory, f".pulseup-doctor-{os.getpid()}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return f"cannot create a file: {exc.strerror}"
    try:
        os.write(fd, b"x" * 4096)
        os.fsync(fd)
    except OSError as exc:
        return f"cannot write: {exc.strerror}"
    finally:
        os.close(fd)
        os.unlink(probe)
    return None


def _someone_else(cfg):
    """True when the doctor runs neither as root nor as WORKER_USER."""
    if os.geteuid() == 0:
        return False
    try:
        return pwd.getpwnam(cfg.worker_user).pw_uid != os.geteuid()
    except KeyError:
        return True


def _worker_access(cfg, directory):
    """Root writes anywhere: when the doctor runs as root, judge WORKER_USER's access by the modes."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam(cfg.worker_user)
    except KeyError:
        return None
    if user.pw_uid == 0:
        return None
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    info = os.stat(directory)
    if info.st_uid == user.pw_uid:
        bits = info.st_mode >> 6
    elif info.st_gid in groups:
        bits = info.st_mode >> 3
    else:
        bits = info.st_mode
    if bits & 0o3 != 0o3:
        return (f"WORKER_USER {cfg.worker_user} cannot write here "
                f"(owner {info.st_uid}, mode {info.st_mode & 0o7777:04o})")
    return None


def check_outbox(findings):
    cfg = findings.cfg
    path = os.path.join(cfg.state_dir, OUTBOX_JOURNAL)
    try:
        count, size, torn = backlog(path)
    except FileNotFoundError:
        return passed("outbox", f"empty (no {OUTBOX_JOURNAL} yet)")
    except OSError as exc:
        return failed("outbox", f"cannot read {path}: {exc.strerror}", "run the doctor as root or as WORKER_USER")
    shown = f"{count} message(s) waiting ({size / 1024:.0f} KiB; bounds {cfg.outbox_max_messages} messages, " \
            f"{_mib(cfg.outbox_max_bytes)})" + (f"; {torn} torn line(s) ignored" if torn else "")
    if count >= BACKLOG_RATIO * cfg.outbox_max_messages or size >= BACKLOG_RATIO * cfg.outbox_max_bytes:
        return failed("outbox", f"backlog near its bound: {shown}",
                      "the worker cannot deliver to the control plane: see the websocket_url and worker checks; "
                      "past the bound, status events are dropped")
    return passed("outbox", shown)


def backlog(path):
    """(messages, bytes, torn lines) still queued in an outbox journal (agent/worker/outbox.py):
    ``+`` records add a frame, ``-`` records acknowledge one. Reads only."""
    entries, torn = {}, 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                torn += 1
                continue
            if not isinstance(record, dict):
                torn += 1
            elif isinstance(record.get("+"), int):
                entries[record["+"]] = len(str(record.get("f", "")))
            elif isinstance(record.get("-"), int):
                entries.pop(record["-"], None)
    return len(entries), sum(entries.values()), torn


CHECKS = [
    ("state_dir", disk_check("state_dir", "STATE_DIR", lambda cfg: cfg.state_dir)),
    ("backup_dir", disk_check("backup_dir", "PULSEUP_BACKUP_DIR", lambda cfg: cfg.pulseup_backup_dir)),
    ("outbox", check_outbox),
]
