"""SSH key validation and authorized_keys edits on real files as a real user (docs/protocol.md, "Supervisor IPC")."""

import base64
import os
import pwd
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from agent.supervisor import sshkeys
from tests.supervisor.conftest import request


def openssh(private_key, comment=""):
    line = private_key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                 serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}".strip()


@pytest.fixture(scope="module")
def keys():
    return {
        "ed25519": openssh(ed25519.Ed25519PrivateKey.generate(), "me@laptop"),
        "p256": openssh(ec.generate_private_key(ec.SECP256R1())),
        "p384": openssh(ec.generate_private_key(ec.SECP384R1())),
        "p521": openssh(ec.generate_private_key(ec.SECP521R1())),
        "rsa3072": openssh(rsa.generate_private_key(65537, 3072)),
        "rsa2048": openssh(rsa.generate_private_key(65537, 2048)),
    }


@pytest.mark.parametrize("name", ["ed25519", "p256", "p384", "p521", "rsa3072"])
def test_accepted_types_and_fingerprint_matches_ssh_keygen(keys, name, tmp_path):
    key = sshkeys.parse_public_key(keys[name])
    path = tmp_path / "k.pub"
    path.write_text(keys[name] + "\n")
    expected = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)],
                              capture_output=True, text=True, check=True).stdout.split()[1]
    assert key.fingerprint == expected


def test_rsa_below_3072_refused(keys):
    with pytest.raises(ValueError, match="3072"):
        sshkeys.parse_public_key(keys["rsa2048"])


@pytest.mark.parametrize("make", [
    lambda k: 'command="/bin/sh" ' + k,                     # options prefix
    lambda k: "no-pty " + k,
    lambda k: k + "\nssh-ed25519 AAAA",                     # two lines
    lambda k: "ssh-dss " + k.split()[1],                    # unsupported type
    lambda k: "ssh-ed25519",                                # no data
    lambda k: "ssh-ed25519 not*base64",
    lambda k: "ssh-rsa " + k.split()[1],                    # label does not match the blob
    lambda k: "ssh-ed25519 " + base64.b64encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x03abc").decode(),
    lambda k: k + " " + "c" * 20000,                        # over 16 KiB
    lambda k: k.split()[0] + " " + k.split()[1] + " bad\x07comment",
    lambda k: "",
])
def test_refused_keys(keys, make):
    with pytest.raises(ValueError):
        sshkeys.parse_public_key(make(keys["ed25519"]))


def test_line_fingerprint_with_options(keys):
    key = sshkeys.parse_public_key(keys["ed25519"])
    assert sshkeys.line_fingerprint('from="10.0.0.1",no-pty ' + keys["ed25519"]) == key.fingerprint
    assert sshkeys.line_fingerprint("# a comment") is None


def _pw(user, home):
    return pwd.struct_passwd((user.pw_name, "x", user.pw_uid, user.pw_gid, "", str(home), "/bin/sh"))


@pytest.fixture
def home(tmp_path, test_user):
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, test_user.pw_uid, test_user.pw_gid)
    return home


@pytest.fixture
def ssh_host(host, seam, home, test_user):
    host.cfg = host.cfg.replace(pulseup_ssh_users=(test_user.pw_name,))
    seam.getpwnam = lambda name: _pw(test_user, home) if name == test_user.pw_name else pwd.getpwnam(name)
    return host


def test_add_is_idempotent_and_files_belong_to_the_user(dispatcher, ssh_host, home, test_user, keys):
    args = {"user": test_user.pw_name, "public_key": keys["ed25519"]}
    first, _ = dispatcher.handle(request("ssh.authorized_keys.add", args))
    fingerprint = sshkeys.parse_public_key(keys["ed25519"]).fingerprint
    assert first["result"] == {"user": test_user.pw_name, "fingerprint": fingerprint, "added": True}
    again, _ = dispatcher.handle(request("ssh.authorized_keys.add", dict(args, comment="renamed")))
    assert again["result"]["added"] is False
    ssh_dir, keyfile = home / ".ssh", home / ".ssh" / "authorized_keys"
    for path, mode in ((ssh_dir, 0o700), (keyfile, 0o600)):
        info = os.stat(path)
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (test_user.pw_uid, test_user.pw_gid, mode)
    assert keyfile.read_text() == keys["ed25519"] + "\n"
    assert [p.name for p in ssh_dir.iterdir()] == ["authorized_keys"]


def test_add_keeps_other_lines_and_comment_override(dispatcher, ssh_host, home, test_user, keys):
    args = {"user": test_user.pw_name, "public_key": keys["p256"], "comment": "deploy key"}
    dispatcher.handle(request("ssh.authorized_keys.add", {"user": test_user.pw_name, "public_key": keys["ed25519"]}))
    dispatcher.handle(request("ssh.authorized_keys.add", args))
    lines = (home / ".ssh" / "authorized_keys").read_text().splitlines()
    assert lines == [keys["ed25519"], keys["p256"] + " deploy key"]


def test_remove_by_fingerprint_and_by_key(dispatcher, ssh_host, home, test_user, keys):
    user = test_user.pw_name
    for name in ("ed25519", "rsa3072"):
        dispatcher.handle(request("ssh.authorized_keys.add", {"user": user, "public_key": keys[name]}))
    fingerprint = sshkeys.parse_public_key(keys["ed25519"]).fingerprint
    reply, _ = dispatcher.handle(request("ssh.authorized_keys.remove", {"user": user, "fingerprint": fingerprint}))
    assert reply["result"] == {"user": user, "fingerprint": fingerprint, "removed": True}
    reply, _ = dispatcher.handle(request("ssh.authorized_keys.remove", {"user": user, "public_key": keys["ed25519"]}))
    assert reply["result"]["removed"] is False
    reply, _ = dispatcher.handle(request("ssh.authorized_keys.remove", {"user": user, "public_key": keys["rsa3072"]}))
    assert reply["result"]["removed"] is True
    assert (home / ".ssh" / "authorized_keys").read_text() == ""


def test_remove_needs_exactly_one_selector(dispatcher, ssh_host, test_user, keys):
    fingerprint = sshkeys.parse_public_key(keys["ed25519"]).fingerprint
    for args in ({}, {"fingerprint": fingerprint, "public_key": keys["ed25519"]}, {"fingerprint": "MD5:aa"}):
        reply, _ = dispatcher.handle(request("ssh.authorized_keys.remove", dict(args, user=test_user.pw_name)))
        assert reply["error"]["code"] == "invalid_argument"


def test_user_policy(dispatcher, host, keys, test_user):
    def add(user):
        reply, _ = dispatcher.handle(request("ssh.authorized_keys.add", {"user": user, "public_key": keys["ed25519"]}))
        return reply["error"]["code"]
    assert add(test_user.pw_name) == "permission_denied"        # not listed
    host.cfg = host.cfg.replace(pulseup_ssh_users=("*",))
    assert add("root") == "permission_denied"                   # uid 0 needs its name listed
    assert add(test_user.pw_name) == "permission_denied"        # a system account too
    assert add("no-such-user-here") == "permission_denied"


def _add(dispatcher, test_user, keys):
    reply, _ = dispatcher.handle(request("ssh.authorized_keys.add",
                                         {"user": test_user.pw_name, "public_key": keys["ed25519"]}))
    return reply


def test_symlinked_authorized_keys_refused(dispatcher, ssh_host, home, test_user, keys, tmp_path):
    target = tmp_path / "shadow"
    target.write_text("root:secret\n")
    (home / ".ssh").mkdir(mode=0o700)
    os.chown(home / ".ssh", test_user.pw_uid, test_user.pw_gid)
    (home / ".ssh" / "authorized_keys").symlink_to(target)
    reply = _add(dispatcher, test_user, keys)
    assert reply["error"]["code"] == "permission_denied"
    assert target.read_text() == "root:secret\n"


def test_hardlinked_root_file_refused(dispatcher, ssh_host, home, test_user, keys, tmp_path):
    (home / ".ssh").mkdir(mode=0o700)
    os.chown(home / ".ssh", test_user.pw_uid, test_user.pw_gid)
    target = home / "rootfile"
    target.write_text("precious\n")
    os.link(target, home / ".ssh" / "authorized_keys")
    assert _add(dispatcher, test_user, keys)["error"]["code"] == "permission_denied"
    assert target.read_text() == "precious\n"


def test_symlinked_ssh_dir_refused(dispatcher, ssh_host, home, test_user, keys, tmp_path):
    elsewhere = tmp_path / "root-only"
    elsewhere.mkdir()
    (home / ".ssh").symlink_to(elsewhere)
    assert _add(dispatcher, test_user, keys)["error"]["code"] == "permission_denied"
    assert list(elsewhere.iterdir()) == []


def test_home_not_owned_by_user_refused(dispatcher, ssh_host, home, test_user, keys):
    os.chown(home, 0, 0)
    reply = _add(dispatcher, test_user, keys)
    assert reply["error"]["code"] == "permission_denied" and not (home / ".ssh").exists()


def test_fs_identity_is_restored(dispatcher, ssh_host, home, test_user, keys, tmp_path):
    _add(dispatcher, test_user, keys)
    probe = tmp_path / "probe"
    probe.write_text("")
    assert os.stat(probe).st_uid == os.geteuid()
