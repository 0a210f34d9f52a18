"""The server-side tools' settings (web search, image generation, remote MCP, embeddings for vector stores): what
each tool reaches and how long it may take. A group of settings.py's :class:`Settings`, in a module of its own
beside sandbox.py, so that settings.py holds what every request's path reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings

from .connectors import MCPConnectorSpec, check_connector_ids

if TYPE_CHECKING:
    from ..run.tools.image_generation import ImageSettings
    from ..run.tools.mcp_config import MCPLimits
    from ..run.tools.mcp_connectors import MCPConnectorEntry
    from ..run.tools.web_search_base import WebSearchSettings


class ToolSettings(BaseSettings):
    """The tools run in the bridge's tool loop: each is off (or falls under ``unsupported_tools``) until configured,
    and each settings object is made here from the flat settings, imported only when its tool is on."""

    # The web_search tool (run/tools/web_search.py): "searxng:URL", "brave" or "tavily"; None: no web search,
    # and a request's web_search tool falls under unsupported_tools.
    web_search: str | None = None
    web_search_url: str | None = None  # Brave's / Tavily's API base instead of the public one (a proxy, a fake)
    brave_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("RESPONSES_BRIDGE_BRAVE_API_KEY", "BRAVE_API_KEY", "brave_api_key"))
    tavily_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("RESPONSES_BRIDGE_TAVILY_API_KEY", "TAVILY_API_KEY", "tavily_api_key"))
    web_search_timeout: float = 15.0  # one search, seconds
    web_search_max_bytes: int = 2 * 1024 * 1024  # largest search answer read
    # The image_generation tool (run/tools/image_generation.py): "upstream" when the upstream serves
    # POST /v1/images/generations (each call goes to the upstream the response's model routes to); "off": a
    # request's image_generation tool falls under unsupported_tools.
    image_generation: Literal["off", "upstream"] = Field(default="off", description=(
        "`upstream`: the `image_generation` tool runs in the tool loop, each call a `POST images/generations` to "
        "the upstream the response's model routes to (every such upstream must serve it); `off`: the tool falls "
        "under `unsupported_tools` (dropped or refused)"))
    image_generation_model: str = Field(default="gpt-image-1", min_length=1, description=(
        "the image model sent upstream when a request's image_generation tool names none"))
    image_generation_timeout: float = Field(default=120.0, gt=0, description="one image generation call, seconds")
    # The remote MCP tool (run/tools/mcp.py): hosts beyond the public internet it may reach, and its limits.
    mcp_allowed_hosts: str = ""  # comma-separated host names, IPs or CIDRs; private/loopback denied unless listed
    mcp_connect_timeout: float = Field(default=10.0, gt=0)
    mcp_call_timeout: float = Field(default=60.0, gt=0)
    mcp_total_timeout: float = Field(default=90.0, gt=0)
    mcp_list_ttl: float = Field(default=300.0, ge=0)  # 0: list the server's tools on every request
    mcp_max_output_bytes: int = Field(default=256 * 1024, gt=0)
    mcp_connectors: dict[str, MCPConnectorSpec] = Field(default_factory=dict, description=(
        "connector ids served as MCP servers the operator runs: `{\"<connector id>\": {server_url, headers, "
        "headers_env, forward_authorization}}`. A Responses `mcp` tool's `connector_id` (OpenAI's "
        "`connector_googledrive`, …) and an Agents API plugin's apps (`.app.json` ids) are served through it, under "
        "the MCP egress rules; `headers` (secrets) are sent to the server only, `headers_env` names variables "
        "holding header values, `forward_authorization` (default true) sends the request's `authorization` as "
        "`Authorization: Bearer` (never over a fixed `Authorization` header). JSON in the environment. Empty: "
        "`connector_id` and plugin apps are refused"))
    # Embeddings for vector store search (services/files/retrieval/embedders.py): with a model named, the upstream's
    # /v1/embeddings (at embedding_url, else the upstream's base URL); without, the local static model.
    embedding_model: str | None = Field(default=None, description=(
        "embedding model for vector stores, called at the upstream's `/v1/embeddings`; unset: the built-in local "
        "embedder (no network)"))
    embedding_url: str | None = Field(default=None, description=(
        "base URL of the embeddings endpoint when it is not the upstream's"))
    embedding_dimensions: int | None = Field(default=None, ge=1, description=(
        "vector size asked of an upstream embedding model that can shorten its vectors"))

    @field_validator("web_search")
    @classmethod
    def _check_web_search(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        from ..run.tools.web_search_base import parse_provider_spec

        parse_provider_spec(value)  # a typo stops the start-up, not the first search
        return value.strip()

    @field_validator("mcp_connectors")
    @classmethod
    def _check_connectors(cls, value: dict[str, MCPConnectorSpec]) -> dict[str, MCPConnectorSpec]:
        return check_connector_ids(value)

    @model_validator(mode="after")
    def _web_search_key(self) -> ToolSettings:
        if self.web_search in ("brave", "tavily") and self._web_search_key_value() is None:
            name = "BRAVE_API_KEY" if self.web_search == "brave" else "TAVILY_API_KEY"
            raise ValueError(f"RESPONSES_BRIDGE_WEB_SEARCH={self.web_search} needs {name} "
                             f"(or RESPONSES_BRIDGE_{name}) in the environment")
        return self

    def _web_search_key_value(self) -> str | None:
        secret = {"brave": self.brave_api_key, "tavily": self.tavily_api_key}.get(self.web_search or "")
        return (secret.get_secret_value() or None) if secret is not None else None

    def web_search_settings(self) -> WebSearchSettings | None:
        """What the web search provider needs; None when no provider is configured."""
        if not self.web_search:
            return None
        from ..run.tools.web_search_base import (
            BRAVE_DEFAULT_BASE,
            TAVILY_DEFAULT_BASE,
            WebSearchSettings,
            parse_provider_spec,
        )

        kind, searxng_url = parse_provider_spec(self.web_search)
        default_base = {"brave": BRAVE_DEFAULT_BASE, "tavily": TAVILY_DEFAULT_BASE}.get(kind, "")
        return WebSearchSettings(provider=kind, base_url=searxng_url or self.web_search_url or default_base,
                                 api_key=self._web_search_key_value(), timeout=self.web_search_timeout,
                                 max_response_bytes=self.web_search_max_bytes)

    def image_settings(self) -> ImageSettings | None:
        """What the image generation tool needs; None when it is off."""
        if self.image_generation == "off":
            return None
        from ..run.tools.image_generation import ImageSettings

        return ImageSettings(model=self.image_generation_model, timeout=self.image_generation_timeout)

    def mcp_limits(self) -> MCPLimits:
        from ..run.tools.mcp_config import MCPLimits

        return MCPLimits(
            allowed_hosts=self.mcp_allowed_hosts,
            connect_timeout=self.mcp_connect_timeout,
            call_timeout=self.mcp_call_timeout,
            total_timeout=self.mcp_total_timeout,
            list_ttl=self.mcp_list_ttl,
            max_output_bytes=self.mcp_max_output_bytes,
        )

    def mcp_connector_registry(self) -> dict[str, MCPConnectorEntry]:
        """The connector registry the MCP tool resolves ``connector_id`` through (run/tools/mcp_connectors.py)."""
        return {name: spec.entry() for name, spec in self.mcp_connectors.items()}
