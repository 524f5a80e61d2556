"""authorized_keys management for allow-listed local users (docs/protocol.md, "Supervisor IPC"; docs/commands.md, `server.ssh_key.add`).

Keys are validated before anything is touched: one OpenSSH line of an allowed
type, no options prefix, at most 16 KiB, RSA at least 3072 bits. The file is
edited with directory file descriptors and ``O_NOFOLLOW`` under the user's
file system identity (setfsuid), so neither a symlink nor a hard link placed
by the user can redirect the supervisor's root powers; the new content is
written to a temporary file and renamed over the old one (atomic replace).
"""

import base64
import binascii
import os
import stat

from agent.errors import AgentError

KEY_TYPES = frozenset({"ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"})
MAX_KEY_BYTES = 16 * 1024
MAX_COMMENT = 256
MIN_RSA_BITS = 3072
MAX_FILE_BYTES = 1024 * 1024
# login.defs(5) defaults: UID_MIN 1000, UID_MAX 60000; outside is a system account (nobody = 65534)
UID_MIN, UID_MAX = 1000, 60000
FILE_NAME = "authorized_keys"


class PublicKey:
    def __init__(self, key_type, blob, comment=""):
        self.key_type, self.blob, self.comment = key_type, blob, comment

    @property
    def fingerprint(self):
        """OpenSSH's ``SHA256:`` fingerprint: unpadded base64 of the blob's SHA-256."""
        import hashlib    # at use: it loads OpenSSL (issue 19, an idle supervisor's memory)
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def line(self):
        text = f"{self.key_type} {base64.b64encode(self.blob).decode()}"
        return f"{text} {self.comment}" if self.comment else text


def check_comment(comment):
    """Raises ValueError unless ``comment`` is <= 256 printable characters."""
    if len(comment) > MAX_COMMENT or not comment.isprintable():
        raise ValueError(f"must be at most {MAX_COMMENT} printable characters")
    return comment


def parse_public_key(text):
    """A validated PublicKey from one OpenSSH public key line; raises ValueError."""
    if len(text.encode("utf-8", "replace")) > MAX_KEY_BYTES:
        raise ValueError(f"must be at most {MAX_KEY_BYTES} bytes")
    if any(c in text for c in "\r\n\0"):
        raise ValueError("must be a single line")
    parts = text.strip().split(None, 2)
    if not parts or parts[0] not in KEY_TYPES:
        raise ValueError("must start with a key type (ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa); "
                         "options prefixes are not accepted")
    if len(parts) < 2:
        raise ValueError("key data is missing")
    blob = _decode_blob(parts[1])
    _check_key(parts[0], blob, parts[1])
    comment = check_comment(parts[2].strip()) if len(parts) == 3 else ""
    return PublicKey(parts[0], blob, comment)


def _decode_blob(text):
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("key data is not valid base64") from None


def _check_key(key_type, blob, b64):
    length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if blob[4:4 + length] != key_type.encode():
        raise ValueError(f"key data does not hold a {key_type} key")
    # imported at use: cryptography is a third of an idle supervisor's memory (issue 19)
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key
    try:
        key = load_ssh_public_key(f"{key_type} {b64}".encode())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"key data is not a valid {key_type} key") from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"ssh-rsa keys need at least {MIN_RSA_BITS} bits (got {key.key_size})")


def line_fingerprint(line):
    """Fingerprint of an existing authorized_keys line (options allowed), or None."""
    parts = line.split()
    for index, word in enumerate(parts[:-1]):
        if word in KEY_TYPES:
            try:
                return PublicKey(word, base64.b64decode(parts[index + 1], validate=True)).fingerprint
            except (binascii.Error, ValueError):
                return None
    return None


def check_user(pw, allowed):
    """Raises AgentError(permission_denied) unless this account's keys may be managed.

    An explicitly listed name is allowed; ``*`` in the list allows every regular
    account, never uid 0 nor system accounts (docs/protocol.md, "Supervisor IPC").
    """
    if pw.pw_name in allowed:
        return
    regular = UID_MIN <= pw.pw_uid <= UID_MAX
    if "*" in allowed and regular:
        return
    why = "is a system account" if not regular else "is not listed in PULSEUP_SSH_USERS"
    raise AgentError("permission_denied", f"user {pw.pw_name!r} {why}", field="user")


class KeyFile:
    """The authorized_keys of one user; every call raises AgentError (permission_denied, failed_precondition)."""

    def __init__(self, seam, pw):
        self.seam, self.pw = seam, pw

    def add(self, key):
        def change(lines):
            if any(line_fingerprint(line) == key.fingerprint for line in lines):
                return lines, False
            return lines + [key.line()], True
        return self._edit(change)

    def remove(self, fingerprint):
        def change(lines):
            kept = [line for line in lines if line_fingerprint(line) != fingerprint]
            return kept, len(kept) != len(lines)
        return self._edit(change)

    def _edit(self, change):
        home_fd = self._open_home()
        try:
            with self.seam.fs_user(self.pw.pw_uid, self.pw.pw_gid):
                ssh_fd = self._open_ssh_dir(home_fd)
                try:
                    lines, changed = change(self._read(ssh_fd))
                    if changed:
                        self._replace(ssh_fd, lines)
                    return changed
                finally:
                    os.close(ssh_fd)
        except OSError as exc:
            raise AgentError("permission_denied", f"cannot edit ~{self.pw.pw_name}/.ssh/{FILE_NAME}: "
                                                  f"{exc.strerror or exc}") from exc
        finally:
            os.close(home_fd)

    def _open_home(self):
        try:
            fd = self.seam.open(self.pw.pw_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            raise AgentError("failed_precondition", f"home directory of {self.pw.pw_name!r} "
                                                    f"is not usable: {exc.strerror}") from exc
        self._require_owner(fd, stat.S_ISDIR, "home directory", close=True)
        return fd

    def _open_ssh_dir(self, home_fd):
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        try:
            fd = self.seam.open(".ssh", flags, dir_fd=home_fd)
        except FileNotFoundError:
            self.seam.mkdir(".ssh", 0o700, dir_fd=home_fd)
            fd = self.seam.open(".ssh", flags, dir_fd=home_fd)
        self._require_owner(fd, stat.S_ISDIR, "~/.ssh", close=True)
        self.seam.fchmod(fd, 0o700)
        return fd

    def _read(self, ssh_fd):
        try:
            fd = self.seam.open(FILE_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=ssh_fd)
        except FileNotFoundError:
            return []
        with os.fdopen(fd, "rb") as handle:
            self._require_owner(fd, stat.S_ISREG, f"~/.ssh/{FILE_NAME}")
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise AgentError("failed_precondition", f"~/.ssh/{FILE_NAME} is larger than 1 MiB")
        return [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]

    def _replace(self, ssh_fd, lines):
        temp = f".{FILE_NAME}.pulseup-{os.urandom(6).hex()}"
        fd = self.seam.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=ssh_fd)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write("".join(line + "\n" for line in lines).encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            self.seam.rename(temp, FILE_NAME, dir_fd=ssh_fd)
        except BaseException:
            _quiet_unlink(self.seam, temp, ssh_fd)
            raise

    def _require_owner(self, fd, kind, what, close=False):
        info = os.fstat(fd)
        if kind(info.st_mode) and info.st_uid == self.pw.pw_uid:
            return
        if close:
            os.close(fd)
        raise AgentError("permission_denied", f"{what} of {self.pw.pw_name!r} is not a "
                                              f"{'directory' if kind is stat.S_ISDIR else 'regular file'} "
                                              f"owned by the user")


def _quiet_unlink(seam, name, dir_fd):
    try:
        seam.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass
