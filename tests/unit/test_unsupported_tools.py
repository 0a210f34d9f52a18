"""The 400 ``unsupported_tool_type`` says what the deployment runs (the server-side tools its loop serves, not
"only client-executed tools") and, for each tool it refuses, the setting that would make it run."""

from __future__ import annotations

import pytest

from responses_bridge.engine.tools.builtin import served_tool_types
from responses_bridge.engine.tools.tools import plan_tools
from responses_bridge.protocol.errors import APIError

# a deployment running the code interpreter, file search and MCP, with no search provider and no image model
SERVED = served_tool_types(web_search=False, file_search=True, code=True, images=False)


def refused(tools: list[dict[str, object]], served: frozenset[str] = SERVED) -> str:
    with pytest.raises(APIError) as caught:
        plan_tools(tools, "reject", served=served)
    assert caught.value.status == 400 and caught.value.code == "unsupported_tool_type"
    assert caught.value.param == "tools"
    return caught.value.message


def test_it_names_what_the_deployment_runs_and_points_web_search_at_its_setting() -> None:
    message = refused([{"type": "web_search"}, {"type": "code_interpreter", "container": {"type": "auto"}}])
    assert "runs only client-executed tools" not in message
    assert message.startswith("Tool type(s) web_search cannot run on this deployment.")
    assert "and runs code_interpreter, file_search, mcp, programmatic_tool_calling, tool_search itself." in message
    assert ("'web_search' needs a search provider: set RESPONSES_BRIDGE_WEB_SEARCH (searxng:URL, brave or tavily)."
            in message)
    assert message.endswith("set RESPONSES_BRIDGE_UNSUPPORTED_TOOLS=drop to have them left out of what the model is "
                            "offered.")


def test_every_web_search_name_and_image_generation_get_their_setting() -> None:
    message = refused([{"type": "web_search_preview"}, {"type": "image_generation"}])
    assert "'web_search_preview' needs a search provider: set RESPONSES_BRIDGE_WEB_SEARCH" in message
    assert "'image_generation' needs RESPONSES_BRIDGE_IMAGE_GENERATION=upstream" in message


def test_a_route_without_the_tool_loop_says_so() -> None:
    message = refused([{"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example/sse"}],
                      served=frozenset())
    assert "client-executed tools ('function'" in message and " only." in message
    assert "'mcp' runs only in the sidecar's tool loop, which this route does not reach" in message


def test_a_tool_no_setting_makes_run_gets_no_hint() -> None:
    message = refused([{"type": "hologram"}])  # a type of a newer API (the GA computer tool is translated now)
    assert message.startswith("Tool type(s) hologram cannot run on this deployment.")
    assert "'hologram'" not in message
