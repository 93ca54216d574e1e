"""Real container engines for the tests: podman (runc), and the docker CLI through podman's socket.

Nothing of the host's engine setup is used or changed: a containers.conf and a storage.conf of
the session's own (runc, cgroupfs, file events, ulimits this kernel allows; see
shared docs/containers-lab.md) are pointed to by CONTAINERS_CONF and CONTAINERS_STORAGE_CONF, so
images and containers live under the session's temporary directory. The test image is built
offline from busybox and the host's python3 (with the libraries ``ldd`` names); nothing is
pulled, and jobs run with ``--pull never``.

Container tests are skipped when podman is missing, except under CI=true, where they fail
saying what to install (``bash scripts/ensure-container-engine.sh``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

TEST_IMAGE = "localhost/pairio-test-python:1"
HOST_PYTHON = Path("/usr/bin/python3")
BUSYBOX_PATHS = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
# Libraries manylinux wheels may link against beyond python's own (pydantic_core needs libgcc_s and librt).
MANYLINUX_LIBRARIES = ("libgcc_s.so.1", "libstdc++.so.6", "librt.so.1", "libpthread.so.0", "libdl.so.2", "libutil.so.1")

CONTAINERS_CONF = """\
# tests only: this host has hybrid cgroups (crun refuses them), no systemd, and no CAP_SYS_RESOURCE
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{tmp_dir}"
# file locks under tmp_dir: the default shm locks (/dev/shm/libpod_lock) are shared by every store on
# the host, and a new store frees all of them, so parallel test sessions' containers would share locks
lock_type = "file"
"""

STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{root}"
runroot = "{runroot}"
"""


def require_podman() -> None:
    """Skip (outside CI) or fail (under CI=true) when podman, runc or busybox is missing."""
    missing = [name for name in ("podman", "runc") if not shutil.which(name) and not Path(f"/usr/sbin/{name}").exists()]
    if not any(p.exists() for p in BUSYBOX_PATHS):
        missing.append("busybox-static")
    if not HOST_PYTHON.exists():
        missing.append("python3")
    if not missing:
        return
    message = f"the container tests need {', '.join(missing)}: bash scripts/ensure-container-engine.sh installs them (as root)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@dataclass(frozen=True)
class PodmanSetup:
    env: dict[str, str]
    """CONTAINERS_CONF and CONTAINERS_STORAGE_CONF: the session's private engine settings and store"""
    image: str
    base_dir: Path

    def podman(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args], env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout, check=check
        )

    def container_names(self) -> list[str]:
        out = self.podman("ps", "--all", "--format", "{{.Names}}")
        return [line for line in out.stdout.split() if line]


# podman refuses a run root longer than this (conmon's socket paths live under it): its container cleanup
# then fails at every exit, and each container's end is noticed only at a 20 s timeout
MAX_RUN_ROOT_CHARS = 50


def write_engine_config(base_dir: Path) -> dict[str, str]:
    """Settings and store under ``base_dir``; the run root in a short directory of its own (see ``run_root_of``)."""
    (base_dir / "libpod-tmp").mkdir(parents=True, exist_ok=True)
    conf = base_dir / "containers.conf"
    conf.write_text(CONTAINERS_CONF.format(tmp_dir=base_dir / "libpod-tmp"))
    storage = base_dir / "storage.conf"
    storage.write_text(STORAGE_CONF.format(root=base_dir / "storage", runroot=run_root_of(base_dir)))
    return {"CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}


def run_root_of(base_dir: Path) -> Path:
    """A short run root for the store under ``base_dir`` (pytest's paths, under xdist workers, pass podman's limit)."""
    run_root = Path("/tmp") / f"pairio-podman-{hashlib.sha256(str(base_dir.resolve()).encode()).hexdigest()[:16]}"
    assert len(str(run_root)) <= MAX_RUN_ROOT_CHARS
    return run_root


def remove_run_root(base_dir: Path) -> None:
    """After ``podman system reset``: the run root's directory (outside ``base_dir``) goes too."""
    shutil.rmtree(run_root_of(base_dir), ignore_errors=True)


def build_rootfs(root: Path) -> Path:
    """busybox plus the host's python3, its standard library and every library ``ldd`` names, at their paths."""
    for sub in ("bin", "etc", "tmp", "proc", "sys", "dev", "usr/bin", "var/tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    busybox = next(p for p in BUSYBOX_PATHS if p.exists())
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox" and not (root / "bin" / applet).exists():
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text(f"root:x:0:0:root:/root:/bin/sh\nbridge:x:{os.getuid()}:{os.getgid()}::/tmp:/bin/sh\n")
    (root / "etc" / "group").write_text(f"root:x:0:\nbridge:x:{os.getgid()}:\n")
    python = HOST_PYTHON.resolve()
    stdlib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"], capture_output=True, text=True, check=True).stdout.strip())
    copy_at_same_path(python, root)
    shutil.copytree(stdlib, root / stdlib.relative_to("/"), symlinks=True, ignore=shutil.ignore_patterns("test", "__pycache__", "idlelib", "tkinter", "turtledemo", "ensurepip"))
    for name in ("python3", "python"):
        (root / "usr" / "bin" / name).symlink_to(python.name)
    for binary in [python, *sorted((stdlib / "lib-dynload").glob("*.so")), *system_libraries(MANYLINUX_LIBRARIES)]:
        copy_at_same_path(binary, root)
        for library in ldd_paths(binary):
            copy_at_same_path(library, root)
    return root


def system_libraries(names: tuple[str, ...]) -> list[Path]:
    """Where the host's dynamic linker finds these libraries (``ldconfig -p``)."""
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    found: dict[str, Path] = {}
    for line in out.splitlines():
        name, _, path = line.strip().partition(" => ")
        name = name.split(" ")[0]
        if name in names and "x86-64" in line and name not in found:
            found[name] = Path(path)
    return list(found.values())


def ldd_paths(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    paths = []
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("/"):
                paths.append(Path(word))
    return paths


def copy_at_same_path(path: Path, root: Path) -> None:
    target = root / str(path).lstrip("/")
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, target, follow_symlinks=True)


def build_test_image(setup_env: dict[str, str], base_dir: Path, image: str) -> None:
    rootfs = build_rootfs(base_dir / "rootfs")
    tarball = base_dir / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True, timeout=120)
    subprocess.run(
        ["podman", "import", "--change", "ENV PATH=/usr/bin:/bin", "--change", 'CMD ["/bin/sh"]', str(tarball), image],
        env={**os.environ, **setup_env}, check=True, capture_output=True, timeout=300,
    )
    tarball.unlink()


@pytest.fixture(scope="session")
def podman_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanSetup]:
    """The session's private podman (settings, store) with the test image built; the variables are set
    in this process's environment while it lasts, so bridges and watchers started here use the same store."""
    require_podman()
    base_dir = tmp_path_factory.mktemp("podman")
    env = write_engine_config(base_dir)
    build_test_image(env, base_dir, TEST_IMAGE)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    setup = PodmanSetup(env=env, image=TEST_IMAGE, base_dir=base_dir)
    try:
        yield setup
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        setup.podman("rm", "--all", "--force", check=False)
        # overlay mounts and root-owned layers: podman itself cleans its store
        setup.podman("system", "reset", "--force", check=False, timeout=300)
        remove_run_root(base_dir)


@pytest.fixture(scope="session")
def podman_socket(podman_setup: PodmanSetup) -> Iterator[str]:
    """``podman system service`` on a unix socket: DOCKER_HOST for the docker CLI."""
    with podman_service(podman_setup, podman_setup.base_dir / "podman.sock") as docker_host:
        yield docker_host


def require_docker_cli() -> None:
    if not shutil.which("docker"):
        message = "docker mode needs a docker CLI: bash scripts/ensure-container-engine.sh installs docker.io (as root)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@contextmanager
def podman_service(setup: PodmanSetup, sock: Path, wrapper: Sequence[str] = ()) -> Iterator[str]:
    """``podman system service`` on ``sock`` while the block runs; yields its DOCKER_HOST.

    ``wrapper`` goes before the command (e.g. ``nsenter --net=...``): the service's containers
    with ``--network host`` then share the network the service runs in.
    """
    require_docker_cli()
    service = subprocess.Popen(
        [*wrapper, "podman", "system", "service", "--time=0", f"unix://{sock}"],
        # conmon leaves its OOM record ("oom") in the service's working directory: not in the checkout
        cwd=setup.base_dir, env={**os.environ, **setup.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _socket_answers(sock):
            if service.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"podman system service did not open {sock} (exit {service.poll()})", pytrace=False)
            time.sleep(0.1)
        yield f"unix://{sock}"
    finally:
        service.terminate()
        try:
            service.wait(timeout=10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


def _socket_answers(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False

