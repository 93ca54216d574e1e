#!/usr/bin/env python3
"""Stage the build context of the hub's container image, offline: Pairio's ``pairio`` and ``hub``
packages and every distribution ``pairio[hub]`` needs, copied from the Python that runs this script.

    python scripts/stage-hub-image.py build/hub
    podman build --pull=never -f hub/Containerfile -t localhost/pairio-hub:1 build/hub

Nothing is downloaded: the distributions are the ones installed for this Python (``pip install
'.[hub]'`` first). Compiled modules (pydantic_core, psycopg's binary) load only in an image whose
Python has the same minor version and platform, so run this with the Python the image's base has.
"""

from __future__ import annotations

import re
import shutil
import sys
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
PAIRIO_PACKAGES = ("pairio", "hub")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "Containerfile")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def needed_distributions(root: str, extras: tuple[str, ...]) -> list[Distribution]:
    """Every installed distribution ``root[extras]`` requires, transitively (markers judged for this Python)."""
    found: dict[str, Distribution] = {}
    todo: list[tuple[str, tuple[str, ...]]] = [(root, extras)]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (canonical(name), wanted) in seen:
            continue
        seen.add((canonical(name), wanted))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            sys.exit(f"{name} is not installed for {sys.executable}: pip install '.[hub]' first")
        if canonical(name) != canonical(root):
            found[canonical(name)] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            environments = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in environments):
                todo.append((req.name, tuple(sorted(req.extras))))
    return sorted(found.values(), key=lambda d: canonical(d.metadata["Name"]))


def copy_distribution(dist: Distribution, site: Path) -> None:
    for file in dist.files or []:
        source = Path(dist.locate_file(file))
        if file.parts[0].endswith(".dist-info") and file.name == "RECORD" or "__pycache__" in file.parts:
            continue
        if ".." in file.parts:  # scripts installed outside site-packages
            continue
        target = site / file
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def stage(out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    site = out_dir / "site-packages"
    site.mkdir(parents=True)
    for package in PAIRIO_PACKAGES:
        shutil.copytree(REPO / package, site / package, ignore=IGNORE)
    shutil.copy2(REPO / "hub" / "Containerfile", out_dir / "Containerfile")
    # pairio's own metadata: its version (pairio.__version__, /healthz) and the extras it was staged with
    version = distribution("pairio").version
    info = site / f"pairio-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: pairio\nVersion: {version}\n")
    dists = needed_distributions("pairio", ("hub",))
    for dist in dists:
        copy_distribution(dist, site)
    print(f"staged pairio, hub and {len(dists)} distributions for Python {sys.version_info.major}.{sys.version_info.minor} in {out_dir}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/stage-hub-image.py OUT_DIR")
    stage(Path(sys.argv[1]).resolve())
