"""``pairio login``: check an API key against a hub and save both for later commands and scripts."""

from __future__ import annotations

import os
from typing import Optional

import click

from pairio.client import PairioClient
from pairio.config import ENV_API_KEY, ENV_URL, resolve_client_settings, save_login
from pairio.errors import AuthenticationError


@click.command()
@click.option("--url", default=None, help=f"the hub's URL [default: ${ENV_URL}, the hub last logged in to, or http://127.0.0.1:8000]")
@click.option("--api-key", default=None, help="the key; asked for (hidden) when not given, which keeps it out of your shell history")
def login(url: Optional[str], api_key: Optional[str]) -> None:
    """Save the hub's URL and your API key (checked with the hub first) in your config file."""
    hub_url = resolve_client_settings(url).url
    if not api_key:
        api_key = click.prompt(f"API key for {hub_url}", hide_input=True).strip()
    with PairioClient(hub_url, api_key) as client:
        try:
            user_id = client.me()
        except AuthenticationError as e:
            raise click.ClickException(f"the hub at {hub_url} does not accept this key: {e.message}. Nothing was saved.") from None
    path = save_login(hub_url, api_key)
    click.echo(f"logged in to {hub_url} as {user_id!r}; saved in {path}")
    if os.environ.get(ENV_API_KEY):
        click.echo(f"note: {ENV_API_KEY} is set in this shell and is used instead of the saved key", err=True)
