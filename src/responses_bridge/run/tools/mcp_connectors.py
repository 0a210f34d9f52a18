"""The operator's connector registry: an ``mcp`` tool's ``connector_id`` resolved to an MCP server the operator runs.

OpenAI's connectors (``connector_googledrive``, ``connector_gmail``…) are MCP servers OpenAI runs, reached with
the caller's OAuth access token (the tool's ``authorization``); a Codex plugin's apps (``.app.json``) are ids of
ChatGPT's. The bridge has neither service: a deployment maps each id it serves to an MCP server of its own
(``RESPONSES_BRIDGE_MCP_CONNECTORS``, config/connectors.py), and the id is then served as a ``server_url`` tool is —
the same client, egress rules, listing, approvals and items — with the operator's fixed headers and, when the entry
says so, the caller's ``authorization`` as ``Authorization: Bearer``. The operator's headers are secrets like a
request's: sent to the server and nowhere else, masked in what it answers (mcp_model.py), never stored (a response
keeps its tools as given, which hold the id and never the URL or headers).

Kept apart from mcp_config.py (which parses a request's tool) so that the settings and an Agents API environment's
plugins (services/agents/environments/plugin_mcp.py) share one lookup and one refusal without loading the request
parser.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SETTING = "RESPONSES_BRIDGE_MCP_CONNECTORS"
"""The setting that serves connector ids: named in every refusal of an unknown one."""


@dataclass(frozen=True, slots=True)
class MCPConnectorEntry:
    """One connector id's MCP server: its URL, the headers the operator fixes (secrets: left out of ``repr``) and
    whether a request's ``authorization`` is sent as ``Authorization: Bearer`` (else it is not sent)."""

    server_url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    forward_authorization: bool = True

    def request_headers(self, given: Mapping[str, str], authorization: str | None) -> dict[str, str]:
        """The headers sent to the server: the request's own, the caller's bearer when forwarded, and the
        operator's fixed headers over both (a request never overrides what the operator set)."""
        fixed = {name.lower() for name in self.headers}
        headers = {name: value for name, value in given.items() if name.lower() not in fixed}
        if authorization is not None and self.forward_authorization and "authorization" not in fixed:
            headers = {name: value for name, value in headers.items() if name.lower() != "authorization"}
            headers["Authorization"] = f"Bearer {authorization}"
        headers.update(self.headers)
        return headers


ConnectorRegistry = Mapping[str, MCPConnectorEntry]


def unknown_connector(connector_id: str, known: Iterable[str]) -> str:
    """The sentence refusing ``connector_id``: it names the id and the ids this server serves, and the setting
    that would serve it."""
    ids = sorted(known)
    shown = connector_id[:128]
    if not ids:
        return (f"The connector '{shown}' is not served here: this server serves no connectors (the operator maps "
                f"connector ids to MCP servers with {SETTING}); give the MCP server's server_url instead.")
    listed = ", ".join(f"'{name}'" for name in ids[:32]) + (", …" if len(ids) > 32 else "")
    return (f"The connector '{shown}' is not served here; the connectors this server serves are {listed} (the "
            f"operator's {SETTING}).")
