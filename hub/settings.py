"""Hub settings: one pydantic-settings class, read from ``PAIRIO_HUB_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class HubSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAIRIO_HUB_", extra="ignore")

    data_dir: Path = Field(default=Path(".pairio/hub"), description="where the SQLite file and job files live")
    database_url: Optional[str] = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite:///<data_dir>/hub.db. Production: postgresql+psycopg://user@host/db",
    )
    public_url: str = Field(default="http://127.0.0.1:8000", description="base URL put into job and file URLs")
    cors_origins: list[str] = Field(default_factory=lambda: ["*"], description="origins allowed to call from browsers")
    max_json_body_bytes: int = Field(default=10 * 1024 * 1024, description="largest JSON request body (413 above)")
    max_upload_bytes: int = Field(default=100 * 1024**3, description="largest output file a bridge may upload")
    max_console_output_bytes: int = Field(default=1024**3, description="largest console output kept per job")
    heartbeat_timeout_sec: float = Field(default=120.0, description="a compute client silent this long is lost")
    expiry_check_interval_sec: float = Field(default=10.0, description="how often lost compute clients are looked for")
    claim_max_wait_sec: float = Field(default=60.0, description="longest long-poll a bridge may ask for")
    database_concurrency: int = Field(
        default_factory=lambda: default_database_concurrency(os.cpu_count()),
        ge=1, le=1000,
        description="PostgreSQL: reads, and apart from them write transactions, one hub process runs at once on its event "
        "loop (more wait their turn in the hub); default twice this machine's CPUs, at least 4. Past about twice the "
        "database server's cores, PostgreSQL spends more CPU per statement, not less time: raise it for a server with "
        "more cores than this machine, and divide it among uvicorn worker processes",
    )
    claim_recheck_interval_sec: float = Field(
        default=2.0, description="how often a waiting claim re-reads the database (catches jobs made by other hub processes)"
    )

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hub.db').resolve()}"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/")


def default_database_concurrency(cpus: Optional[int]) -> int:
    """Statements at once per hub process: on a 2-core machine running PostgreSQL too, 4 reads at once cost the
    server 0.13 ms of CPU each and 8 or 20 cost 0.45 (bench/README.md, "P3, eighth pass")."""
    return max(4, 2 * (cpus or 1))
