"""The 400 ``unsupported_tool_type`` (``RESPONSES_BRIDGE_UNSUPPORTED_TOOLS=reject``): what this deployment runs, and
for each tool it cannot, the setting that would make it run.

Its words used to be fixed: "it runs only client-executed tools", on a deployment running the code interpreter,
file search and MCP, and with no word of ``RESPONSES_BRIDGE_WEB_SEARCH`` for a ``web_search``. They are built here
from what the route's tool loop serves (``served``, empty where no loop runs: the ext_proc door's own translation).
"""

from __future__ import annotations

from collections.abc import Collection

from ...protocol.errors import APIError, invalid_request
from .builtin import SERVED_TOOL_TYPES, WEB_SEARCH_TYPES

CLIENT_TOOLS = ("'function', 'namespace', 'custom', 'shell', 'local_shell', 'computer_use_preview', 'computer', "
                "'apply_patch', and 'tool_search' with execution 'client'")

WEB_SEARCH_HINT = "needs a search provider: set RESPONSES_BRIDGE_WEB_SEARCH (searxng:URL, brave or tavily)"
IMAGE_HINT = ("needs RESPONSES_BRIDGE_IMAGE_GENERATION=upstream (an upstream that serves POST /v1/images/generations)")
LOOP_HINT = ("runs only in the sidecar's tool loop, which this route does not reach (through Envoy: the route to the "
             "sidecar's HTTP door that envoy-config renders)")


def unsupported_tools_error(kinds: Collection[str], served: Collection[str]) -> APIError:
    """The 400 for a request offering the tool types ``kinds``, which this route cannot run; ``served``: the
    server-side tool types its loop runs."""
    runs = f"It runs the client-executed tools ({CLIENT_TOOLS})"
    itself = sorted({"web_search" if kind in WEB_SEARCH_TYPES else kind for kind in served})
    runs += f", and runs {', '.join(itself)} itself." if itself else " only."
    hints = "".join(f"'{kind}' {hint}. " for kind in sorted(kinds) if (hint := _hint(kind, served)))
    return invalid_request(
        f"Tool type(s) {', '.join(sorted(kinds))} cannot run on this deployment. {runs} {hints}"
        "Remove them from 'tools', or set RESPONSES_BRIDGE_UNSUPPORTED_TOOLS=drop to have them left out of what the "
        "model is offered.", param="tools", code="unsupported_tool_type")


def _hint(kind: str, served: Collection[str]) -> str | None:
    if kind in WEB_SEARCH_TYPES:
        return WEB_SEARCH_HINT
    if kind == "image_generation":
        return IMAGE_HINT
    if kind in SERVED_TOOL_TYPES and not served:
        return LOOP_HINT
    return None
