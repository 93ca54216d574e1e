"""Whether the images of the apps a bridge serves are on the host its podman/docker jobs run on.

Checked once when the bridge starts (bridge/runner.py), on the engine's host: the local one,
or the SSH bridge's remote host through its agent's ``probe``. The bridge log then says, per
image, that it is there, that it will be pulled, or (pull policy ``never``) that the app's jobs
will fail and how to fix it. A job whose image is missing still fails at ``create`` with the
same advice (bridge/watch.py ``image_missing_error``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

from pairio.models import PairioApp

from .containers import PullPolicy


@dataclass(frozen=True)
class ImageCheck:
    """What the engine on ``where`` said about the images asked for."""

    where: str
    """the engine's host, as users know it (e.g. ``this host``, ``alice@gpu1:22``)"""
    present: Mapping[str, bool | str]
    """image -> whether the engine has it, or why that could not be told (e.g. an invalid reference)"""
    error: Optional[str] = None
    """the engine could not be asked (then ``present`` is empty)"""

    @classmethod
    def from_agent(cls, where: str, answer: Mapping[str, object]) -> "ImageCheck":
        """From ``remote_agent.check_images``'s answer: ``{"images": {IMAGE: bool or str}}`` or ``{"error": ...}``."""
        images = answer.get("images")
        present = {str(k): v if isinstance(v, (bool, str)) else bool(v) for k, v in images.items()} if isinstance(images, Mapping) else {}
        error = answer.get("error")
        return cls(where, present, str(error) if error else None)


def app_images(apps: Iterable[PairioApp]) -> dict[str, list[str]]:
    """image -> the names of the apps whose processors run in it (processors without an image need none)."""
    images: dict[str, list[str]] = {}
    for app in apps:
        for processor in app.processors:
            if processor.image and app.name not in images.setdefault(processor.image, []):
                images[processor.image].append(app.name)
    return images


def image_report(
    check: ImageCheck, images: Mapping[str, Sequence[str]], engine: str, pull_policy: PullPolicy
) -> list[tuple[int, str]]:
    """(log level, message) lines for the bridge log: one per image, the fix named where jobs would fail."""
    if check.error:
        return [(logging.WARNING, f"could not check the apps' images with {engine} on {check.where}: {check.error}")]
    lines: list[tuple[int, str]] = []
    for image in sorted(images):
        apps = ", ".join(repr(a) for a in images[image])
        label = f"image {image} (app {apps})"
        found = check.present.get(image, f"{engine} was not asked about it")
        if isinstance(found, str):
            lines.append((logging.WARNING, f"could not check {label} on {check.where}: {found}"))
        elif found:
            lines.append((logging.INFO, f"{label} is on {check.where}: ok"))
        elif pull_policy is PullPolicy.NEVER:
            lines.append((
                logging.ERROR,
                f"{label} is not on {check.where} and pull policy 'never' forbids pulling it: the app's jobs will fail "
                f"until it is there; run '{engine} pull {image}' on {check.where}, or let the bridge pull it "
                "(pullPolicy 'missing' in bridge.json, or 'pairio-bridge register ... --pull-policy missing')",
            ))
        else:
            lines.append((logging.INFO, f"{label} is not on {check.where} yet: {engine} pulls it for the first job (pull policy '{pull_policy.value}')"))
    return lines
