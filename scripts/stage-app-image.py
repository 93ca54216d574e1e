#!/usr/bin/env python3
"""Stage the build context of an app's container image: the app's files and Pairio's SDK, offline.

    python scripts/stage-app-image.py apps/hello_world build/hello_world
    podman build --pull=never -f apps/hello_world/Containerfile -t localhost/pairio-hello-world:1 build/hello_world

The SDK is this checkout's ``pairio`` package plus the third-party modules it imports (pydantic,
httpx, ...), copied from the Python that runs this script: nothing is downloaded. Compiled modules
(pydantic_core) only load in an image whose Python has the same minor version and platform, so run
this script with the Python the image's base has (the script says which version it staged for).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Imports that pull in every module an app's processors need from the SDK at run time.
SDK_ENTRY_POINTS = ("pairio", "pairio.app")


def sdk_module_roots() -> list[Path]:
    """Files and package directories of every non-standard-library module the SDK imports."""
    probe = (
        "import sys, sysconfig\n"
        "SKIP = ('__editable__', '_distutils_hack')  # an editable install's and setuptools' import hooks\n"
        f"for name in {SDK_ENTRY_POINTS!r}: __import__(name)\n"
        "import httpx; httpx.Client().close()  # what a lazily staged input's download loads (httpcore, h11, certifi)\n"
        "stdlib = sysconfig.get_paths()['stdlib']\n"
        "for m in list(sys.modules.values()):\n"
        "    f = getattr(m, '__file__', None)\n"
        "    if f and not f.startswith(stdlib + '/') and '.' not in m.__name__ and not m.__name__.startswith(SKIP):\n"
        "        print(m.__name__, f)\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    roots = []
    for line in out.stdout.splitlines():
        _, file = line.split(" ", 1)
        path = Path(file)
        roots.append(path.parent if path.name == "__init__.py" else path)
    return sorted(set(roots))


def stage(app_dir: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(app_dir, out_dir / "app", ignore=shutil.ignore_patterns("__pycache__", "Containerfile"))
    sdk = out_dir / "sdk"
    sdk.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for root in sdk_module_roots():
        if root.is_dir():
            shutil.copytree(root, sdk / root.name, ignore=ignore)
        else:
            shutil.copy2(root, sdk / root.name)
    print(f"staged {app_dir} and the SDK for Python {sys.version_info.major}.{sys.version_info.minor} in {out_dir}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/stage-app-image.py APP_DIR OUT_DIR")
    stage(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
