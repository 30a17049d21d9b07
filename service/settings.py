"""One Settings object for the service, the workers and the CLI (env prefix ``IDEM_``).

Built once per process through :func:`get_settings`; tests build ``Settings(...)``
directly so they never depend on the environment of the machine running them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of idemsweep, read from ``IDEM_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="IDEM_", extra="ignore")

    data_dir: Path = Field(
        default=Path("./.idem"),
        description="Directory for the default SQLite database and other local state.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the store, e.g. postgresql+psycopg://user@host/db; "
            "unset means a SQLite file idem.db under data_dir."
        ),
    )
    lease_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A running sweep whose heartbeat is older than this goes back to queued.",
    )
    heartbeat_interval_s: float = Field(
        default=5.0, gt=0, description="How often a worker refreshes its sweep's heartbeat."
    )
    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port the API listens on.")
    api_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens accepted by the API; empty means no authentication.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS; empty disables CORS."
    )
    max_trials_per_sweep: int = Field(
        default=10000, ge=1, description="Largest grid a submitted spec may expand to."
    )
    max_epochs: int = Field(default=100000, ge=1, description="Largest epochs per trial.")
    max_samples_x_dim: int = Field(
        default=100_000_000,
        ge=1,
        description="Largest samples × input dimension of one trial (memory guard).",
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1, description="Largest request body the API accepts."
    )
    ray_address: str | None = Field(
        default=None, description="Ray cluster address for workers; unset starts a local Ray."
    )
    report_every: int = Field(
        default=10, ge=1, description="Epochs per Ray Tune report (one store batch each)."
    )

    @property
    def db_url(self) -> str:
        """The resolved database URL (the SQLite default lives under ``data_dir``)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'idem.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide Settings, read from the environment once."""
    return Settings()
