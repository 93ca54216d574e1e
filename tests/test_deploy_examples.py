"""The deployment examples stay true to the code: the compose file's settings are the hub's, the systemd
unit's command line is one the bridge accepts, and the unit leaves running jobs alone on a stop."""

from __future__ import annotations

import configparser
import re
import shlex

import click
import yaml

from bridge.cli import main as bridge_main
from hub.settings import HubSettings

from .hubtools import REPO

DEPLOY = REPO / "examples" / "deploy"


def test_the_compose_file_sets_only_settings_the_hub_has() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    hub = compose["services"]["hub"]
    fields = {f"PAIRIO_HUB_{name.upper()}" for name in HubSettings.model_fields}
    assert set(hub["environment"]) <= fields, set(hub["environment"]) - fields
    assert hub["environment"]["PAIRIO_HUB_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert hub["depends_on"]["db"]["condition"] == "service_healthy"
    assert all(p.startswith("127.0.0.1:") for p in hub["ports"])  # behind a proxy, never open by default
    tag = re.search(r"-t (\S+) build/hub", (REPO / "hub" / "Containerfile").read_text())
    assert tag is not None and hub["image"] == tag.group(1)


def test_the_systemd_unit_runs_a_command_the_bridge_accepts() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "pairio-bridge@.service")
    service = unit["Service"]
    program, *args = shlex.split(service["ExecStart"].replace("%i", "lab"))
    assert program.endswith("/pairio-bridge")
    command = bridge_main.get_command(click.Context(bridge_main), args[0])
    assert command is not None, args[0]
    with command.make_context(args[0], args[1:]) as ctx:
        assert str(ctx.params["bridge_dir"]).endswith("/lab")
    # a stop or restart signals the bridge only: its jobs run on and the next start adopts them
    assert service["KillMode"] == "process" and service["UMask"] == "0077"
