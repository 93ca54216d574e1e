"""Where the client finds the hub's URL and the user's API key.

In order: explicit arguments, then ``PAIRIO_API_URL`` / ``PAIRIO_API_KEY``, then the
config file that ``pairio login`` writes (``$XDG_CONFIG_HOME/pairio/config.json``,
default ``~/.config/pairio/config.json``), then the default URL of a local hub.

The config file keeps one key per hub URL. A key from the file is only used for
the hub it was saved for, so pointing ``PAIRIO_API_URL`` at another hub never
sends that hub the first hub's key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import PairioConfigError
from .private_file import write_private_file

DEFAULT_HUB_URL = "http://127.0.0.1:8000"
ENV_URL = "PAIRIO_API_URL"
ENV_API_KEY = "PAIRIO_API_KEY"


def normalize_url(url: str) -> str:
    """``url`` without surrounding space or trailing slashes; it must be http(s)."""
    cleaned = url.strip().rstrip("/")
    if not cleaned.startswith(("http://", "https://")):
        raise PairioConfigError(f"the hub URL must start with http:// or https://, got {url!r}")
    return cleaned


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pairio" / "config.json"


@dataclass
class ClientConfigFile:
    """The contents of the config file: the hub to use by default and a key per hub URL."""

    default_url: Optional[str] = None
    api_keys: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"defaultUrl": self.default_url, "apiKeys": self.api_keys}


def load_config_file(path: Optional[Path] = None) -> ClientConfigFile:
    path = path or config_path()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return ClientConfigFile()
    except (OSError, ValueError) as e:
        raise PairioConfigError(
            f"cannot read the Pairio config file {path} ({type(e).__name__}); fix or delete it, then run 'pairio login'"
        ) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("apiKeys", {}), dict):
        raise PairioConfigError(f"the Pairio config file {path} is not in the expected shape; delete it and run 'pairio login'")
    keys = {normalize_url(u): str(k) for u, k in raw.get("apiKeys", {}).items()}
    default_url = raw.get("defaultUrl")
    return ClientConfigFile(default_url=normalize_url(default_url) if default_url else None, api_keys=keys)


def save_login(url: str, api_key: str, path: Optional[Path] = None) -> Path:
    """Store the key for this hub and make the hub the default; the file is readable by its owner only."""
    path = path or config_path()
    config = load_config_file(path)
    url = normalize_url(url)
    config.default_url = url
    config.api_keys[url] = api_key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return write_private_file(path, json.dumps(config.to_json(), indent=2) + "\n")


@dataclass(frozen=True)
class ClientSettings:
    url: str
    api_key: Optional[str] = field(repr=False)
    url_source: str
    api_key_source: Optional[str]


def resolve_client_settings(url: Optional[str] = None, api_key: Optional[str] = None) -> ClientSettings:
    """The hub URL and API key to use, and where each came from (for messages such as ``pairio login``'s)."""
    config: Optional[ClientConfigFile] = None

    def file() -> ClientConfigFile:
        nonlocal config
        if config is None:
            config = load_config_file()
        return config

    if url:
        resolved_url, url_source = normalize_url(url), "argument"
    elif os.environ.get(ENV_URL):
        resolved_url, url_source = normalize_url(os.environ[ENV_URL]), ENV_URL
    elif file().default_url:
        resolved_url, url_source = str(file().default_url), f"config file {config_path()}"
    else:
        resolved_url, url_source = DEFAULT_HUB_URL, "default"

    key_source: Optional[str]
    if api_key:
        key, key_source = api_key, "argument"
    elif os.environ.get(ENV_API_KEY):
        key, key_source = os.environ[ENV_API_KEY].strip(), ENV_API_KEY
    elif resolved_url in file().api_keys:
        key, key_source = file().api_keys[resolved_url], f"config file {config_path()}"
    else:
        key, key_source = None, None
    return ClientSettings(url=resolved_url, api_key=key, url_source=url_source, api_key_source=key_source)
