"""``mcp_connectors``: the operator's connector registry as the settings hold it (a JSON object in
``RESPONSES_BRIDGE_MCP_CONNECTORS``, a mapping under ``mcp_connectors`` in the YAML file), checked at the start so
that a typo stops the process rather than the first request naming the connector.

Each entry maps a connector id — OpenAI's (``connector_googledrive``…) for the Responses API's ``mcp`` tool, or a
Codex app's, for a plugin's ``.app.json`` — to an MCP server: ``server_url``, the ``headers`` the operator fixes
(secrets: shown masked by ``config``), ``headers_env`` naming variables that hold header values (read at the start,
as an upstream's ``api_key_env``), and ``forward_authorization``, whether a request's ``authorization`` (the
OAuth access token OpenAI's connectors take) is sent as ``Authorization: Bearer``. run/tools/mcp_connectors.py
serves them.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

if TYPE_CHECKING:
    from ..run.tools.mcp_connectors import MCPConnectorEntry

CONNECTOR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 7230 token, as a request's MCP headers
_FORBIDDEN = re.compile(r"[\r\n\x00]")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")


class MCPConnectorSpec(BaseModel):
    """One connector id's MCP server, as the operator writes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server_url: str = Field(description="the MCP server's URL (http or https), reached under the MCP egress rules")
    headers: dict[str, SecretStr] = Field(default={}, description="headers sent with every request to it")
    headers_env: dict[str, str] = Field(default={}, description=(
        "headers whose values are read from these environment variables at the start"))
    forward_authorization: bool = Field(default=True, description=(
        "send a request's `authorization` as `Authorization: Bearer`; false: it is not sent"))

    @field_validator("server_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        value = value.strip()
        if not re.match(r"^https?://[^/?#\s]+", value, re.IGNORECASE):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, header in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"'{name[:64]}' is not an HTTP header name")
            if _FORBIDDEN.search(header.get_secret_value()):
                raise ValueError(f"the value of '{name}' must be on one line")  # never quoted: a credential
        return value

    @field_validator("headers_env")
    @classmethod
    def _check_headers_env(cls, value: dict[str, str]) -> dict[str, str]:
        for name, variable in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"'{name[:64]}' is not an HTTP header name")
            if not _VARIABLE.fullmatch(variable):
                raise ValueError(f"'{variable[:64]}' is not an environment variable's name")
            if os.environ.get(variable) is None:
                raise ValueError(f"the environment variable {variable} (the header '{name}') is not set")
            if _FORBIDDEN.search(os.environ[variable]):
                raise ValueError(f"the environment variable {variable} must hold one line")
        return value

    @model_validator(mode="after")
    def _one_authorization(self) -> MCPConnectorSpec:
        fixed = {name.lower() for name in [*self.headers, *self.headers_env]}
        if "authorization" in fixed and self.forward_authorization and "forward_authorization" in \
                self.model_fields_set:
            raise ValueError("an 'Authorization' header and forward_authorization: true: the caller's token "
                             "would replace the fixed header; drop one of them")
        return self

    def entry(self) -> MCPConnectorEntry:
        """What the MCP tool uses: the headers' values read (and ``headers_env``'s variables)."""
        from ..run.tools.mcp_connectors import MCPConnectorEntry

        headers = {name: secret.get_secret_value() for name, secret in self.headers.items()}
        headers.update({name: os.environ[variable] for name, variable in self.headers_env.items()})
        return MCPConnectorEntry(self.server_url, headers, self.forward_authorization)


def check_connector_ids(value: dict[str, MCPConnectorSpec]) -> dict[str, MCPConnectorSpec]:
    """The registry's ids: 1 to 128 letters, digits, ``_``, ``.``, ``:`` or ``-``, starting with a letter or
    digit (OpenAI's ``connector_…``, a Codex app's ``asdk_app_…``)."""
    for name in value:
        if not CONNECTOR_ID.fullmatch(name):
            raise ValueError(f"'{name[:64]}' is not a connector id: 1-128 letters, digits, '_', '.', ':' or '-', "
                             "starting with a letter or digit")
    return value
