"""One Settings object for the service, the workers and the CLI (env prefix ``IDEM_``).

Built once per process through :func:`get_settings`; tests build ``Settings(...)``
directly so they never depend on the environment of the machine running them.

A bad value never surfaces as a pydantic traceback: :func:`get_settings` raises
:class:`SettingsInvalid`, whose message is one line naming the variable, what is wrong
with its value and an example (the field's first ``examples`` entry); ``idem api``,
``idem worker`` and ``idem up`` print it and exit 2.
"""

from __future__ import annotations

import json
import os
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PositiveFloat, PositiveInt, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ENV_PREFIX = "IDEM_"


def split_list(value: Any) -> Any:
    """A list setting from the environment: a JSON list (``'["a","b"]'``), or a
    comma-separated list (``a,b``), or one plain value (``a``); blanks around commas are
    dropped. Anything that is not a string passes through for pydantic to check."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"looks like a JSON list but is not valid JSON ({exc.msg})") from None
    return [part.strip() for part in text.split(",") if part.strip()]


def knob(default: Any, description: str, example: Any, **limits: Any) -> Any:
    """A settings field with what it sets and one example (quoted by the one-line error
    for a bad value and by docs/settings.md), so no field goes without either; ``limits``
    are pydantic's (``ge=0``, ``min_length=1``). A list default is copied per instance."""
    if isinstance(default, list):
        return Field(
            default_factory=default.copy, description=description, examples=[example], **limits
        )
    return Field(default, description=description, examples=[example], **limits)


def _no_control_characters(value: str) -> str:
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("contains a control character (a newline or tab pasted by mistake?)")
    return value


class Settings(BaseSettings):
    """Every knob of idemsweep, read from ``IDEM_*`` environment variables.

    Every field is a :func:`knob`: a description and an example (``examples[0]``, quoted
    by the one-line error for a bad value).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    data_dir: Path = knob(
        Path("./.idem"),
        "Directory for the default SQLite database and other local state.",
        "/var/lib/idem",
    )
    database_url: str | None = knob(
        None,
        "SQLAlchemy URL of the store, e.g. postgresql+psycopg://user@host/db; "
        "unset means a SQLite file idem.db under data_dir.",
        "postgresql+psycopg://idem@db:5432/idem",
    )
    lease_timeout_s: PositiveFloat = knob(
        60.0, "A running sweep whose heartbeat is older than this goes back to queued.", 60
    )
    heartbeat_interval_s: PositiveFloat = knob(
        5.0, "How often a worker refreshes its sweep's heartbeat.", 5
    )
    host: str = knob("127.0.0.1", "Address the API listens on.", "0.0.0.0", min_length=1)
    port: int = knob(8000, "Port the API listens on.", 8000, ge=0, le=65535)
    api_tokens: Annotated[list[SecretStr], NoDecode] = knob(
        [],
        "Bearer tokens accepted by the API (one token, a comma-separated list or a "
        "JSON list); empty means no authentication.",
        "token-one,token-two",
    )
    cors_origins: Annotated[list[str], NoDecode] = knob(
        [],
        "Origins allowed by CORS (comma-separated or a JSON list); empty: no CORS.",
        "https://lab.example.org,http://localhost:3000",
    )
    max_trials_per_sweep: PositiveInt = knob(
        100_000,
        "Largest grid a submitted spec may expand to (bench/scale.py runs 100,000).",
        100_000,
    )
    max_epochs: PositiveInt = knob(100000, "Largest epochs per trial.", 100000)
    max_samples_x_dim: PositiveInt = knob(
        100_000_000, "Largest samples × input dimension of one trial (memory guard).", 100_000_000
    )
    max_body_bytes: PositiveInt = knob(
        1_048_576, "Largest request body the API accepts.", 1_048_576
    )
    ray_address: str | None = knob(
        None, "Ray cluster address for workers; unset starts a local Ray.", "10.0.0.5:6379"
    )
    ray_jobs: bool = knob(
        True,
        "Run each claimed sweep as its own Ray Job (submitted over the Ray dashboard's HTTP "
        "address; one job per sweep and attempt on the dashboard's Jobs page); false runs "
        "the Tune experiment inside the worker process.",
        True,
    )
    ray_dashboard_url: str | None = knob(
        None,
        "HTTP address of the Ray dashboard that Ray Jobs are submitted to (a KubeRay or "
        "cloud cluster's head service); unset: the dashboard of the Ray the worker joined "
        "or started.",
        "http://ray-head:8265",
    )
    ray_dashboard_public_url: str | None = knob(
        None,
        "The Ray dashboard's address as users open it, for the links stored on sweeps (e.g. "
        "a published port or an ingress); unset: the address jobs go to.",
        "http://127.0.0.1:8265",
    )
    ray_token: SecretStr | None = knob(
        None,
        "Ray's auth token, sent as a bearer token to the dashboard; unset: Ray's own lookup "
        "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token).",
        "0123abcd…",
    )
    ray_job_python: str | None = knob(
        None,
        "The Python a sweep's Ray Job runs (its entrypoint is `PYTHON -m "
        "workers.job_driver`); unset: this worker's own interpreter when the worker joined "
        "or started the Ray itself, `python` on the cluster's PATH when it was given only "
        "IDEM_RAY_DASHBOARD_URL.",
        "/opt/venv/bin/python",
    )
    job_attempts: PositiveInt = knob(
        3,
        "Claims of one sweep after which a Ray Job driver that died again fails the sweep "
        "instead of giving it back to the queue.",
        3,
    )
    report_every: PositiveInt = knob(10, "Epochs per Ray Tune report (one store batch each).", 10)

    @field_validator("api_tokens", "cors_origins", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("api_tokens")
    @classmethod
    def _tokens_plain(cls, tokens: list[SecretStr]) -> list[SecretStr]:
        for token in tokens:
            secret = token.get_secret_value()
            if not secret.strip() or any(ch.isspace() or ch == "," for ch in secret):
                raise ValueError("a token must be non-empty, without spaces or commas")
        return tokens

    @field_validator("*", mode="before")
    @classmethod
    def _printable(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _no_control_characters(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            make_url(value)
        except ArgumentError:
            raise ValueError("is not a SQLAlchemy database URL (dialect+driver://...)") from None
        return value

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError("names a file, not a directory")
        return value

    @field_validator("ray_dashboard_url", "ray_dashboard_public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (the dashboard, port 8265)")
        return value

    @field_validator("host", "ray_address")
    @classmethod
    def _no_blanks(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(ch.isspace() for ch in value)):
            raise ValueError("must be an address without spaces")
        return value

    @property
    def db_url(self) -> str:
        """The resolved database URL (the SQLite default lives under ``data_dir``)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'idem.db'}"


class SettingsInvalid(ValueError):
    """An ``IDEM_*`` environment variable holds a value the settings refuse.

    The message is one line per process: every bad variable with its problem and an
    example, separated by ``; ``.
    """


def env_name(field: str) -> str:
    """The environment variable of a settings field (``port`` -> ``IDEM_PORT``)."""
    return f"{ENV_PREFIX}{field.upper()}"


def _example(field: str) -> str:
    info = Settings.model_fields[field]
    examples = info.examples or []
    return f"e.g. {env_name(field)}={examples[0]}" if examples else ""


def _problem(field: str, message: str, value: Any) -> str:
    """``IDEM_PORT='abc': not a valid integer (e.g. IDEM_PORT=8000)``; secrets unshown."""
    message = message.removeprefix("Value error, ").rstrip(".")
    secret = field == "api_tokens"
    shown = "" if secret or value is None else f"={str(value)!r}"
    example = _example(field)
    return f"{env_name(field)}{shown}: {message}" + (f" ({example})" if example else "")


def describe_error(exc: ValidationError | SettingsError, environ: dict[str, str]) -> str:
    """One line for a failed ``Settings()``: each bad variable, its problem, an example."""
    if isinstance(exc, SettingsError):
        # pydantic-settings could not decode a complex value; its message names the field.
        for field in Settings.model_fields:
            if f'"{field}"' in str(exc):
                raw = environ.get(env_name(field))
                return _problem(field, "cannot be parsed", raw)
        return str(exc).splitlines()[0]
    parts = []
    seen: set[str] = set()
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        if field in seen or field not in Settings.model_fields:
            continue
        seen.add(field)
        raw = environ.get(env_name(field))
        parts.append(_problem(field, error["msg"], raw))
    return "; ".join(parts) or str(exc).splitlines()[0]


def load_settings() -> Settings:
    """Settings from the environment; SettingsInvalid (one line) for any bad value."""
    try:
        return Settings()
    except (ValidationError, SettingsError) as exc:
        raise SettingsInvalid(describe_error(exc, dict(os.environ))) from None


def markdown_table() -> str:
    """The settings as the Markdown table in docs/settings.md (a test keeps them equal)."""
    rows = ["| Variable | Default | Example | What it sets |", "|---|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = "(empty)" if info.default_factory is not None else info.default
        example = (info.examples or [""])[0]
        rows.append(f"| `{env_name(name)}` | `{default}` | `{example}` | {info.description} |")
    return "\n".join(rows) + "\n"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide Settings, read from the environment once (SettingsInvalid if bad)."""
    return load_settings()
