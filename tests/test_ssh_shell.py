"""The shell seam over SSH (bridge/ssh/connection.py) against a real sshd on 127.0.0.1: commands, files, and every error."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.shell import CommandNotFoundError, CommandTimeoutError, DiskFullError, ShellUnavailableError
from bridge.ssh import connection
from bridge.ssh.connection import AuthenticationFailedError, HostKeyError, KeyPassphraseNeededError, SshShell, remote_command_line
from bridge.ssh.options import SshOptions, parse_destination

from .hubtools import free_port, returns_within
from .ssh_support import TestSshd, make_key, sshd  # noqa: F401 - the fixture

# ---------------------------------------------------------------- pure parts


def test_destinations_parse() -> None:
    d = parse_destination("alice@lab1.example.org:2222")
    assert (d.user, d.host, d.port) == ("alice", "lab1.example.org", 2222)
    d = parse_destination("bob@[::1]", default_user="x")
    assert (d.user, d.host, d.port, str(d)) == ("bob", "::1", 22, "bob@[::1]:22")
    assert parse_destination("login1", default_user="carol").user == "carol"
    for bad in ("", "a@b@c", "host:99999", "host:port", "a b"):
        with pytest.raises(ValueError):
            parse_destination(bad)


def test_remote_command_lines_are_quoted_and_carry_env() -> None:
    assert remote_command_line(["echo", "a b", "$(rm -rf ~)", "it's"]) == "echo 'a b' '$(rm -rf ~)' 'it'\"'\"'s'"
    assert remote_command_line(["sbatch", "x.sh"], {"SLURM_CONF": "/etc/my slurm.conf"}) == "env 'SLURM_CONF=/etc/my slurm.conf' sbatch x.sh"
    with pytest.raises(ValueError):
        remote_command_line([])


def test_options_from_a_destination() -> None:
    options = SshOptions.from_destination("alice@lab1:2200", remoteDir="/scratch/alice/pairio")
    assert (options.host, options.port, options.user, options.remoteDir) == ("lab1", 2200, "alice", "/scratch/alice/pairio")
    assert options.jump_destination is None
    with pytest.raises(ValueError):
        SshOptions(host="alice@lab1")


# ---------------------------------------------------------------- against sshd


@pytest.fixture
def shell(sshd: TestSshd) -> Iterator[SshShell]:  # noqa: F811
    s = SshShell(sshd.options())
    yield s
    s.close()


def test_commands_run_with_their_output_exit_code_stdin_and_env(shell: SshShell, tmp_path: Path) -> None:
    result = shell.run(["sh", "-c", 'echo "out:$1:$GREETING"; echo err >&2; exit 3', "sh", "a 'quoted' $(arg)"], env={"GREETING": "hi there"})
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out:a 'quoted' $(arg):hi there\n", "err\n")
    assert shell.run(["cat"], stdin=b"x" * 300_000).stdout == "x" * 300_000
    assert shell.run(["true"]).ok
    assert shell.connections_made == 1, "one connection serves every command"


def test_files_go_up_and_come_back(shell: SshShell, tmp_path: Path) -> None:
    local = tmp_path / "data.bin"
    local.write_bytes(os.urandom(200_000))
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    target = str(remote_dir / "data.bin")
    shell.put_file(local, target, mode=0o640)
    st = shell.stat(target)
    assert st is not None and st.size == 200_000 and not st.is_dir
    assert (os.stat(target).st_mode & 0o777) == 0o640
    assert not [p for p in remote_dir.iterdir() if p.name.endswith(".part")]
    back = tmp_path / "back.bin"
    shell.get_file(target, back)
    assert back.read_bytes() == local.read_bytes()
    dir_stat = shell.stat(str(remote_dir))
    assert dir_stat is not None and dir_stat.is_dir
    assert shell.stat(str(remote_dir / "nope")) is None
    with pytest.raises(FileNotFoundError):
        shell.get_file(str(remote_dir / "nope"), tmp_path / "x")
    shell.remove(target)
    shell.remove(target)  # missing is fine
    assert shell.stat(target) is None
    (remote_dir / "sub").mkdir()
    (remote_dir / "sub" / "f").write_text("x")
    shell.remove(str(remote_dir), recursive=True)
    assert not remote_dir.exists()
    assert shell.home_dir().startswith("/")


def test_a_missing_command_says_so(shell: SshShell) -> None:
    with pytest.raises(CommandNotFoundError, match="'no-such-command-xyz' was not found on .*install it there"):
        shell.run(["no-such-command-xyz", "--version"])


def test_a_command_over_its_timeout_is_abandoned(shell: SshShell) -> None:
    started = time.monotonic()
    # the command would run 600 s, far beyond the wait here: only the timeout ends the call within it
    with pytest.raises(CommandTimeoutError, match="did not finish within 0.5 s"):
        returns_within(lambda: shell.run(["sleep", "600"], timeout=0.5), 60)
    print(f"\nabandoned after {time.monotonic() - started:.2f} s")  # information only
    assert shell.run(["echo", "still usable"]).stdout == "still usable\n"


def test_an_unknown_host_is_refused_with_how_to_trust_it(sshd: TestSshd, tmp_path: Path) -> None:  # noqa: F811
    known_hosts = tmp_path / "known_hosts"
    shell = SshShell(sshd.options(knownHostsFile=str(known_hosts)))
    with pytest.raises(HostKeyError) as refused:
        shell.connect()
    message = str(refused.value)
    assert f"[127.0.0.1]:{sshd.port} is not in {known_hosts}" in message
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {known_hosts}" in message and "--accept-new-host-key" in message
    assert "ssh-ed25519 SHA256:" in message
    assert not known_hosts.exists()

    accepting = SshShell(sshd.options(knownHostsFile=str(known_hosts), acceptNewHostKey=True))
    assert accepting.run(["echo", "ok"]).stdout == "ok\n"
    accepting.close()
    recorded = known_hosts.read_text()
    assert recorded.startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    strict = SshShell(sshd.options(knownHostsFile=str(known_hosts)))
    assert strict.run(["echo", "trusted now"]).ok
    strict.close()


def test_a_changed_host_key_is_refused_even_when_accepting_new_ones(sshd: TestSshd, tmp_path: Path) -> None:  # noqa: F811
    other = make_key(tmp_path / "other_host_key")
    known_hosts = tmp_path / "known_hosts"
    kind, key = (tmp_path / "other_host_key.pub").read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    assert other.exists()
    for accept_new in (False, True):
        shell = SshShell(sshd.options(knownHostsFile=str(known_hosts), acceptNewHostKey=accept_new))
        with pytest.raises(HostKeyError, match="HOST KEY MISMATCH") as refused:
            shell.connect()
        assert f'ssh-keygen -R "[127.0.0.1]:{sshd.port}" -f {known_hosts}' in str(refused.value)
    assert known_hosts.read_text() == f"[127.0.0.1]:{sshd.port} {kind} {key}\n"


def test_a_wrong_key_fails_authentication(sshd: TestSshd, tmp_path: Path) -> None:  # noqa: F811
    stranger = make_key(tmp_path / "stranger")
    with pytest.raises(AuthenticationFailedError, match="authentication to .* failed.*authorized_keys"):
        SshShell(sshd.options(identityFile=str(stranger))).connect()
    with pytest.raises(AuthenticationFailedError, match="does not exist"):
        SshShell(sshd.options(identityFile=str(tmp_path / "missing"))).connect()


def test_an_unreachable_host_is_reported_and_retried_with_backoff(sshd: TestSshd, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    # a backoff far longer than the test, so the second call surely falls within it however slow the machine
    monkeypatch.setattr(connection, "RECONNECT_BACKOFF_MIN_SEC", 600.0)
    monkeypatch.setattr(connection, "RECONNECT_BACKOFF_MAX_SEC", 3600.0)
    shell = SshShell(sshd.options(port=free_port()))
    with pytest.raises(ShellUnavailableError, match="cannot reach .*check the host name and port"):
        shell.run(["true"])
    with pytest.raises(ShellUnavailableError, match="next attempt in"):
        shell.run(["true"])  # within the backoff: refused at once, no new attempt


def test_a_dropped_connection_is_reconnected(sshd: TestSshd) -> None:  # noqa: F811
    shell = SshShell(sshd.options())
    assert shell.run(["echo", "before"]).ok
    sshd.restart()
    deadline = time.monotonic() + 60
    while True:
        try:
            assert shell.run(["echo", "after"]).stdout == "after\n"
            break
        except ShellUnavailableError:
            assert time.monotonic() < deadline, "no reconnection within 60 s"
            time.sleep(0.2)
    assert shell.connections_made == 2
    shell.close()


def test_a_jump_host_tunnels_the_connection(sshd: TestSshd) -> None:  # noqa: F811
    # The same sshd serves as the jump host and as the target, reached through the jump host's tunnel.
    shell = SshShell(sshd.options(jumpHost=f"{sshd.user}@127.0.0.1:{sshd.port}"))
    assert shell.run(["sh", "-c", "echo $SSH_CONNECTION"]).stdout.startswith("127.0.0.1 ")
    shell.close()


def test_keys_from_ssh_agent(sshd: TestSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not socket_path.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket_path)}
        subprocess.run(["ssh-add", "-q", str(sshd.client_key)], env=env, check=True, timeout=30, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* to fall back on
        shell = SshShell(sshd.options(identityFile=None, useAgent=True))
        assert shell.run(["echo", "via agent"]).stdout == "via agent\n"
        shell.close()
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_a_full_remote_disk_is_reported(shell: SshShell, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(2 * 1024 * 1024))
        with pytest.raises(DiskFullError, match="the remote disk is full.*free some space there"):
            shell.put_file(big, str(small / "big.bin"))
        assert not list(small.iterdir()), "the partial file is cleaned up"
    finally:
        subprocess.run(["umount", str(small)], timeout=30)


def test_an_encrypted_key_needs_its_passphrase_which_is_kept_in_memory_only(sshd: TestSshd, tmp_path: Path) -> None:  # noqa: F811
    key = tmp_path / "encrypted"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-f", str(key)], check=True, timeout=30)
    authorized = sshd.dir / f"authorized_keys.{sshd.user}"
    original = authorized.read_text()
    authorized.write_text(original + (tmp_path / "encrypted.pub").read_text())
    try:
        with pytest.raises(KeyPassphraseNeededError, match="is encrypted: load it into ssh-agent"):
            SshShell(sshd.options(identityFile=str(key))).connect()
        shell = SshShell(sshd.options(identityFile=str(key)), passphrase="correct horse")
        assert shell.run(["echo", "unlocked"]).stdout == "unlocked\n"
        shell.close()
    finally:
        authorized.write_text(original)
