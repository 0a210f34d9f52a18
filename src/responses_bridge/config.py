"""Settings, from command-line flags over environment variables over defaults.

Environment variables use the ``RESPONSES_BRIDGE_`` prefix (``RESPONSES_BRIDGE_DB``, …). The upstream's base URL
and key also fall back to the names every OpenAI client already knows, ``OPENAI_BASE_URL`` and
``OPENAI_API_KEY``, so a deployment that already exports them needs no new configuration.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .engine.options import EngineOptions


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RESPONSES_BRIDGE_", extra="ignore")

    upstream: str = Field(
        default="http://127.0.0.1:8090/v1",
        validation_alias=AliasChoices("RESPONSES_BRIDGE_UPSTREAM", "OPENAI_BASE_URL", "upstream"),
    )
    api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("RESPONSES_BRIDGE_API_KEY", "OPENAI_API_KEY", "api_key")
    )
    # Where the sidecar's own upstream calls go (background runs, WebSocket turns, compaction, the HTTP door):
    # in Envoy mode Envoy's listener (``http://127.0.0.1:<port>/v1``, its passthrough /v1/chat/completions
    # route), so they get Envoy's retries, TLS and stats too. None: the upstream itself.
    upstream_via: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    extproc_host: str = "127.0.0.1"
    extproc_port: int = 50051
    db: str | None = None  # None: a file under the user's data directory
    upstream_timeout: float = 600.0  # whole-request ceiling; streams are also bounded by idle_timeout
    upstream_connect_timeout: float = 10.0
    upstream_idle_timeout: float = 300.0  # the longest silence allowed between two upstream chunks
    max_request_bytes: int = 64 * 1024 * 1024
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    developer_role: Literal["developer", "system"] = "system"
    reasoning_history: Literal["drop", "reasoning_content"] = "drop"
    unsupported_tools: Literal["drop", "reject"] = "drop"  # server-side tools it cannot run; see engine/tools.py
    sealing_key: str | None = None  # urlsafe base64 of 32 bytes; see sealing.py
    store_stall_seconds: float = 10.0  # a write waiting longer than this makes GET /health/ready answer 503
    log_level: str = "info"
    log_format: Literal["json", "console"] = "json"

    @field_validator("upstream")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("upstream_via")
    @classmethod
    def _strip_via_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None

    def engine_options(self) -> EngineOptions:
        return EngineOptions(
            max_tokens_field=self.max_tokens_field,
            developer_role=self.developer_role,
            reasoning_history=self.reasoning_history,
            unsupported_tools=self.unsupported_tools,
        )

    def db_path(self) -> str:
        if self.db:
            return self.db
        from .store import default_db_path

        return default_db_path()


def load_settings(**overrides: object) -> Settings:
    """Flags given on the command line (not None) win over the environment."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


def environ_has_upstream() -> bool:
    return any(name in os.environ for name in ("RESPONSES_BRIDGE_UPSTREAM", "OPENAI_BASE_URL"))
