"""Process settings from the environment (and a ``.env`` file), as the README lists them."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from signoff.durations import parse_duration

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Settings(BaseSettings):
    """Everything a process needs from its environment."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    slack_bot_token: str | None = Field(None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: str | None = Field(None, validation_alias="SLACK_SIGNING_SECRET")
    slack_app_token: str | None = Field(None, validation_alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field("https://slack.com/api/", validation_alias="SIGNOFF_SLACK_API_URL")
    database_url: str = Field("sqlite:///signoff.db", validation_alias="SIGNOFF_DATABASE_URL")
    config_path: str = Field("signoff.yaml", validation_alias="SIGNOFF_CONFIG")
    signing_key: str | None = Field(None, validation_alias="SIGNOFF_SIGNING_KEY")
    sweep_interval: float = Field(1.0, validation_alias="SIGNOFF_SWEEP_INTERVAL")
    public_url: str = Field("http://127.0.0.1:8080", validation_alias="SIGNOFF_PUBLIC_URL")
    evidence_link_ttl: Duration = Field(timedelta(days=7), validation_alias="SIGNOFF_EVIDENCE_LINK_TTL")
    # Slack's rate limits, kept by each process for its share of the workspace: the share is
    # 1 / (replicas × workers). Off only for a Slack stand-in that has no limits.
    slack_pacing: bool = Field(True, validation_alias="SIGNOFF_SLACK_PACING")
    replicas: int = Field(1, ge=1, le=1000, validation_alias="SIGNOFF_REPLICAS")
    # Seconds a client has to send a whole request (headers and body) once it starts one.
    read_timeout: float = Field(10.0, validation_alias="SIGNOFF_READ_TIMEOUT")

    @field_validator("sweep_interval")
    @classmethod
    def _positive_interval(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("SIGNOFF_SWEEP_INTERVAL must be a positive number of seconds")
        return v

    @field_validator("read_timeout")
    @classmethod
    def _positive_timeout(cls, v: float) -> float:
        if not 0 < v < float("inf"):
            raise ValueError("SIGNOFF_READ_TIMEOUT must be a positive number of seconds")
        return v

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, v: str) -> str:
        return v if v.endswith("/") else v + "/"

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        return v.rstrip("/")


class SettingsError(Exception):
    """Raised with a readable message when the environment is not usable."""


def load_settings() -> Settings:
    """Read the settings; a bad value becomes a SettingsError naming the variable."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            lines.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid environment:\n  " + "\n  ".join(lines)) from None
